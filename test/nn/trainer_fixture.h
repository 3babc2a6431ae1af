// The trainer tests' fixture: a small synthetic MNIST-format set (synthetic_data.h), the
// trainer's configuration for it, and helpers to compare weights, crash a run and read its
// TensorBoard scalars. Used by trainer_test.cpp and trainer_callbacks_test.cpp.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../io/tb_reader.h"
#include "nn/trainer.h"
#include "synthetic_data.h"

namespace mlai::nn {

class TrainerTest : public testing::SyntheticDataTest {
 protected:
  Config base() const {
    Config c = synthetic_config();
    c.epochs = 2;
    c.workers = 2;
    return c;
  }
  // 4 epochs of SGD with a per-epoch step schedule (the same rates however a run is split):
  // the resume tests' base.
  Config four_epochs_sgd(double lr, double gamma) const {
    Config c = base();
    c.epochs = 4;
    c.optimizer = "sgd";
    c.lr = lr;
    c.lr_schedule = "step";
    c.lr_step_epochs = 1;
    c.lr_gamma = gamma;
    return c;
  }
  static std::vector<std::vector<float>> weights(Trainer& t) {
    std::vector<std::vector<float>> w;
    for (auto& [n, v] : t.model().named_parameters()) w.push_back(v.data().to_vector<float>());
    return w;
  }
  // c trained in two runs (experiment "split"): `first_part` shortens the first (fewer epochs,
  // a --max-steps), the second resumes from its last.h5 with c itself. Returns the second run's
  // final weights, which an exact resume makes those of one straight run of c.
  static std::vector<std::vector<float>> split_run_weights(
      const Config& c, const std::function<void(Config&)>& first_part) {
    Config first = c;
    first.experiment_name = "split";
    first_part(first);
    const FitResult r1 = Trainer(first).fit();
    Config second = c;
    second.experiment_name = "split";
    second.resume = r1.version_dir + "/checkpoints/last.h5";
    Trainer resumed(second);
    resumed.fit();
    return weights(resumed);
  }
  // Runs c until MLAI_FAULT_RANK makes it throw at optimizer step `step` (a crash without a
  // signal) and returns the last.h5 it left in <log_dir>/<experiment_name> ("" if none).
  static std::string crash_at(const Config& c, int step) {
    setenv("MLAI_FAULT_RANK", "0", 1);
    setenv("MLAI_FAULT_STEP", std::to_string(step).c_str(), 1);
    Trainer dying(c);
    EXPECT_THROW(dying.fit(), std::runtime_error);
    unsetenv("MLAI_FAULT_RANK");
    unsetenv("MLAI_FAULT_STEP");
    std::string ckpt;
    for (auto& e :
         std::filesystem::recursive_directory_iterator(c.log_dir + "/" + c.experiment_name))
      if (e.path().filename() == "last.h5") ckpt = e.path();
    return ckpt;
  }
};

// The lines of a run's metrics.csv (the header first, a test row last when the run tested).
inline std::vector<std::string> metrics_rows(const std::string& version_dir) {
  std::ifstream csv(version_dir + "/metrics.csv");
  std::vector<std::string> rows;
  for (std::string l; std::getline(csv, l);) rows.push_back(l);
  return rows;
}

// The column of a metrics.csv row by the header's names ("" when absent or empty).
inline std::string cell(const std::vector<std::string>& rows, size_t row,
                        const std::string& column) {
  auto split = [](const std::string& line) {  // (quoted cells hold commas: the confusion JSON)
    std::vector<std::string> out(1);
    bool quoted = false;
    for (char ch : line) {
      if (ch == '"') {
        quoted = !quoted;
      } else if (ch == ',' && !quoted) {
        out.emplace_back();
      } else {
        out.back() += ch;
      }
    }
    return out;
  };
  const std::vector<std::string> head = split(rows.at(0)), cells = split(rows.at(row));
  for (size_t i = 0; i < head.size(); ++i)
    if (head[i] == column) return i < cells.size() ? cells[i] : "";
  return "";
}

// A metrics.csv row's learning rate: its third cell.
inline double lr_cell(const std::string& row) {
  const size_t a = row.find(',', row.find(',') + 1) + 1;
  return std::stod(row.substr(a, row.find(',', a) - a));
}

// The steps of every TensorBoard scalar with this tag in a run's event file.
inline std::vector<int64_t> scalar_steps(const std::string& version_dir, const std::string& tag) {
  std::vector<int64_t> steps;
  for (auto& e : std::filesystem::directory_iterator(version_dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      for (const std::string& rec : testing::read_records(e.path()))
        if (const testing::Scalar sc = testing::decode_scalar(rec); sc.tag == tag)
          steps.push_back(sc.step);
  return steps;
}

// The values of every TensorBoard scalar with this tag in a run's event file, in order.
inline std::vector<float> scalar_values(const std::string& version_dir, const std::string& tag) {
  std::vector<float> values;
  for (auto& e : std::filesystem::directory_iterator(version_dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      for (const std::string& rec : testing::read_records(e.path()))
        if (const testing::Scalar sc = testing::decode_scalar(rec); sc.tag == tag)
          values.push_back(sc.value);
  return values;
}

}  // namespace mlai::nn
