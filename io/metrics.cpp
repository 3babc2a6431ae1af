// ConfusionMatrix arithmetic and text output, and CsvLogger's header check, quoting and per-row
// flushing. See metrics.h for the zero-division convention.
#include "io/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>

namespace mlai::io {

ConfusionMatrix::ConfusionMatrix(int num_classes, std::vector<std::string> class_names)
    : k_(num_classes), names_(std::move(class_names)) {
  if (k_ <= 0) {
    throw std::runtime_error("ConfusionMatrix: num_classes must be positive, got " +
                             std::to_string(k_));
  }
  if (names_.empty()) {
    for (int c = 0; c < k_; ++c) names_.push_back(std::to_string(c));
  }
  if (static_cast<int>(names_.size()) != k_) {
    throw std::runtime_error("ConfusionMatrix: " + std::to_string(names_.size()) +
                             " class names given for " + std::to_string(k_) + " classes");
  }
  counts_.assign(static_cast<size_t>(k_) * static_cast<size_t>(k_), 0);
}

void ConfusionMatrix::add(const int64_t* predicted, const int64_t* target, int64_t n) {
  // Validate first so a bad batch leaves the matrix unchanged.
  for (int64_t i = 0; i < n; ++i) {
    for (auto [arr, name] : {std::pair{predicted, "predicted"}, std::pair{target, "target"}}) {
      if (arr[i] < 0 || arr[i] >= k_) {
        throw std::runtime_error("ConfusionMatrix::add: " + std::string(name) + " label " +
                                 std::to_string(arr[i]) + " at index " + std::to_string(i) +
                                 " is outside [0, " + std::to_string(k_) + ")");
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) counts_[static_cast<size_t>(target[i] * k_ + predicted[i])]++;
}

void ConfusionMatrix::add_counts(const int64_t* counts) {
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += counts[i];
}

void ConfusionMatrix::merge(const ConfusionMatrix& other) {
  if (other.k_ != k_) {
    throw std::runtime_error("ConfusionMatrix::merge: " + std::to_string(other.k_) +
                             " classes into " + std::to_string(k_));
  }
  add_counts(other.counts_.data());
}

void ConfusionMatrix::reset() { std::fill(counts_.begin(), counts_.end(), 0); }

int64_t ConfusionMatrix::count(int t, int p) const {
  return counts_.at(static_cast<size_t>(t) * static_cast<size_t>(k_) + static_cast<size_t>(p));
}

int64_t ConfusionMatrix::total() const {
  int64_t s = 0;
  for (int64_t c : counts_) s += c;
  return s;
}

int64_t ConfusionMatrix::support(int c) const {
  int64_t s = 0;
  for (int p = 0; p < k_; ++p) s += count(c, p);
  return s;
}

int64_t ConfusionMatrix::predicted(int c) const {
  int64_t s = 0;
  for (int t = 0; t < k_; ++t) s += count(t, c);
  return s;
}

namespace {
double ratio(int64_t num, int64_t den) {
  return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den);
}
}  // namespace

double ConfusionMatrix::accuracy() const {
  int64_t correct = 0;
  for (int c = 0; c < k_; ++c) correct += count(c, c);
  return ratio(correct, total());
}

double ConfusionMatrix::precision(int c) const { return ratio(count(c, c), predicted(c)); }
double ConfusionMatrix::recall(int c) const { return ratio(count(c, c), support(c)); }

double ConfusionMatrix::f1(int c) const {
  // 2PR/(P+R) == 2TP/(2TP+FP+FN) == 2TP/(predicted+support), which has no 0/0 when TP is 0
  // but FP or FN is not.
  return ratio(2 * count(c, c), predicted(c) + support(c));
}

double ConfusionMatrix::macro_precision() const {
  double s = 0;
  for (int c = 0; c < k_; ++c) s += precision(c);
  return s / k_;
}

double ConfusionMatrix::macro_recall() const {
  double s = 0;
  for (int c = 0; c < k_; ++c) s += recall(c);
  return s / k_;
}

double ConfusionMatrix::macro_f1() const {
  double s = 0;
  for (int c = 0; c < k_; ++c) s += f1(c);
  return s / k_;
}

namespace {
std::string pad_left(const std::string& s, size_t w) {
  return s.size() >= w ? s : std::string(w - s.size(), ' ') + s;
}
std::string pad_right(const std::string& s, size_t w) {
  return s.size() >= w ? s : s + std::string(w - s.size(), ' ');
}
std::string fixed4(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}
}  // namespace

std::string ConfusionMatrix::to_string() const {
  const std::string corner = "true\\pred";
  size_t first = corner.size(), w = 1;
  for (const auto& n : names_) first = std::max(first, n.size()), w = std::max(w, n.size());
  for (int64_t c : counts_) w = std::max(w, std::to_string(c).size());
  std::string out = pad_right(corner, first);
  for (const auto& n : names_) out += "  " + pad_left(n, w);
  out += "\n";
  for (int t = 0; t < k_; ++t) {
    out += pad_right(names_[static_cast<size_t>(t)], first);
    for (int p = 0; p < k_; ++p) out += "  " + pad_left(std::to_string(count(t, p)), w);
    out += "\n";
  }
  return out;
}

std::string ConfusionMatrix::report() const {
  size_t first = std::string("macro avg").size();
  for (const auto& n : names_) first = std::max(first, n.size());
  auto row = [&](const std::string& name, const std::string& p, const std::string& r,
                 const std::string& f, int64_t support) {
    return pad_right(name, first) + "  " + pad_left(p, 9) + "  " + pad_left(r, 6) + "  " +
           pad_left(f, 6) + "  " + pad_left(std::to_string(support), 8) + "\n";
  };
  std::string out = pad_right("class", first) + "  precision  recall      f1   support\n";
  for (int c = 0; c < k_; ++c) {
    out += row(names_[static_cast<size_t>(c)], fixed4(precision(c)), fixed4(recall(c)),
               fixed4(f1(c)), support(c));
  }
  out += row("macro avg", fixed4(macro_precision()), fixed4(macro_recall()), fixed4(macro_f1()),
             total());
  out += row("accuracy", "", "", fixed4(accuracy()), total());
  return out;
}

// ---------------------------------------------------------------------------------------------

std::string CsvLogger::Value::format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

namespace {
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';  // a quote inside a quoted field is doubled
    q += c;
  }
  return q + "\"";
}
}  // namespace

CsvLogger::CsvLogger(const std::string& path, std::vector<std::string> columns)
    : path_(path), columns_(std::move(columns)) {
  if (columns_.empty()) throw std::runtime_error("CsvLogger " + path_ + ": no columns given");
  std::set<std::string> seen;
  std::string header;
  for (const auto& c : columns_) {
    if (!seen.insert(c).second) {
      throw std::runtime_error("CsvLogger " + path_ + ": column '" + c + "' given twice");
    }
    if (!header.empty()) header += ',';
    header += csv_field(c);
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool resume = fs::exists(path_, ec) && fs::file_size(path_, ec) > 0 && !ec;
  bool needs_newline = false;
  if (resume) {
    std::ifstream in(path_, std::ios::binary);
    std::string existing;
    std::getline(in, existing);
    if (!existing.empty() && existing.back() == '\r') existing.pop_back();
    if (existing != header && header.rfind(existing + ",", 0) == 0) {
      // A newer mlai logs more columns, appended at the end: the file gets the longer header
      // (put in place by a rename) and its earlier rows keep their fewer cells.
      std::string rest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const std::string tmp = path_ + ".tmp";
      bool written = false;
      {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << header << "\n" << rest;
        written = static_cast<bool>(out.flush());
      }
      if (!written || (fs::rename(tmp, path_, ec), ec)) {
        fs::remove(tmp, ec);
        throw std::runtime_error("cannot rewrite the header of " + path_);
      }
      in = std::ifstream(path_, std::ios::binary);
      existing = header;
    }
    if (existing != header) {
      throw std::runtime_error("cannot append to " + path_ + ": its header '" + existing +
                               "' differs from '" + header + "' (use a new log directory)");
    }
    in.clear();
    in.seekg(-1, std::ios::end);
    needs_newline = in.get() != '\n';  // a crash mid-row: start the next row on its own line
  }
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_) throw std::runtime_error("cannot open " + path_ + ": " + std::strerror(errno));
  std::string first = resume ? (needs_newline ? "\n" : "") : header + "\n";
  if (std::fputs(first.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    std::fclose(file_);
    throw std::runtime_error("cannot write " + path_ + ": " + std::strerror(errno));
  }
}

CsvLogger::~CsvLogger() {
  if (file_) std::fclose(file_);
}

void CsvLogger::log(const std::map<std::string, Value>& row) {
  for (const auto& [name, value] : row) {
    if (std::find(columns_.begin(), columns_.end(), name) == columns_.end()) {
      throw std::runtime_error("cannot log to " + path_ + ": unknown column '" + name + "'");
    }
  }
  std::string line;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (i) line += ",";
    auto it = row.find(columns_[i]);
    if (it != row.end()) line += csv_field(it->second.text());
  }
  line += "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    throw std::runtime_error("cannot write " + path_ + ": " + std::strerror(errno));
  }
}

}  // namespace mlai::io
