// Classification metrics and metric logs: a confusion matrix over raw int64 label arrays (with
// accuracy, per-class and macro precision/recall/F1), and a CSV logger that appends one flushed
// row per call and resumes an existing file with the same header.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace mlai::io {

// counts()[t * K + p] is the number of samples of true class t predicted as class p.
//
// Zero division follows scikit-learn's zero_division=0: precision of a class never predicted,
// recall of a class with no samples, and F1 when precision + recall == 0 are all 0. Macro
// averages are plain means over all K classes, so such classes pull the average down (as
// sklearn does with labels=range(K)). accuracy() of an empty matrix is 0.
class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int num_classes, std::vector<std::string> class_names = {});

  // Throws if any label is outside [0, num_classes), naming the array and the index.
  void add(const int64_t* predicted, const int64_t* target, int64_t n);
  // Adds another matrix's counts (num_classes^2 values, e.g. after an allreduce).
  void add_counts(const int64_t* counts);
  void merge(const ConfusionMatrix& other);
  void reset();

  int num_classes() const { return k_; }
  const std::string& name(int c) const { return names_.at(static_cast<size_t>(c)); }
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t count(int true_class, int predicted_class) const;
  int64_t total() const;
  int64_t support(int c) const;    // samples whose true class is c (row sum)
  int64_t predicted(int c) const;  // samples predicted as c (column sum)

  double accuracy() const;
  double precision(int c) const;
  double recall(int c) const;
  double f1(int c) const;
  double macro_precision() const;
  double macro_recall() const;
  double macro_f1() const;

  // The matrix with class names on both axes (rows: true class, columns: predicted).
  std::string to_string() const;
  // Per-class precision/recall/F1/support and the macro averages, one class per line.
  std::string report() const;

 private:
  int k_;
  std::vector<std::string> names_;
  std::vector<int64_t> counts_;
};

// Appends rows to a CSV file, one flush per row so a crash loses at most the row in progress.
// Opening an existing file with the same header appends (resume); one whose header the new
// columns extend (a newer mlai logging more) gets the longer header and appends; any other
// header is an error.
class CsvLogger {
 public:
  // A cell: numbers are formatted here (integers exactly, floats with 10 significant digits).
  class Value {
   public:
    Value(const char* s) : text_(s) {}
    Value(std::string s) : text_(std::move(s)) {}
    template <std::integral T>
    Value(T v) : text_(std::to_string(v)) {}
    template <std::floating_point T>
    Value(T v) : text_(format_double(static_cast<double>(v))) {}
    const std::string& text() const { return text_; }

   private:
    static std::string format_double(double v);
    std::string text_;
  };

  CsvLogger(const std::string& path, std::vector<std::string> columns);
  ~CsvLogger();
  CsvLogger(const CsvLogger&) = delete;
  CsvLogger& operator=(const CsvLogger&) = delete;

  // Writes one row; columns missing from `row` are left empty, unknown columns throw.
  void log(const std::map<std::string, Value>& row);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> columns_;
  std::FILE* file_ = nullptr;
};

}  // namespace mlai::io
