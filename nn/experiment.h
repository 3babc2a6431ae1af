// What a run shows and leaves behind besides the model: the experiment directory, the machine
// and git facts for hparams.json, the model summary, the profiler report and the progress line.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "nn/module.h"
#include "tensor/stream.h"
#include "tensor/trace.h"

namespace mlai::nn {

// logs/<experiment>/version_<SLURM_JOB_ID, or the next free n>/ with checkpoints/ inside.
std::string make_version_dir(const std::string& log_dir, const std::string& experiment);

// Lightning's ckpt_path="last": the newest checkpoints/last.h5 (by modification time) of any
// version of <log_dir>/<experiment>; "" when there is none.
std::string find_last_checkpoint(const std::string& log_dir, const std::string& experiment);

// Hostname, cores, device, Slurm job, git commit (at configure time) and the command line.
nlohmann::json machine_info(const std::string& device, const std::string& command_line);

// Lightning's ModelSummary: every module by dotted name, type and parameters, the trainable and
// total counts; with `flops` (a forward of one sample run under it) Lightning's FLOPs column and
// total too.
std::string model_summary(Module& m, const ModuleFlops* flops = nullptr);

// Seconds of wall clock since t0.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Wall-clock time per action ("data wait", "forward", ...): calls, mean, total and percent;
// under data parallelism also each action's total on the fastest and the slowest rank.
class Profiler {
 public:
  void add(const std::string& action, double seconds);
  double total(const std::string& action) const;
  std::string report(double wall_seconds) const;

  // An action's totals over the ranks (set once at the end, from allreduces).
  struct Spread {
    double min = 0, max = 0, mean = 0;
    int slowest = 0;  // the rank with the largest total
  };
  void set_spread(const std::string& action, const Spread& s);
  // What report() prints, for profile.json: per action its calls, total and mean on this rank
  // and, when set, the spread over `world` ranks.
  nlohmann::json to_json(double wall_seconds, int world) const;

  class Scope {  // times one call of an action
   public:
    // (Also a span of --profiler-trace's timeline while it records.)
    Scope(Profiler& p, const char* action)
        : p_(p), action_(action), span_(action, "trainer"), t0_(std::chrono::steady_clock::now()) {}
    ~Scope() {
      p_.add(action_,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
    }

   private:
    Profiler& p_;
    const char* action_;
    trace::Span span_;
    std::chrono::steady_clock::time_point t0_;
  };

 private:
  struct Entry {
    int64_t calls = 0;
    double seconds = 0;
    bool spread_set = false;
    Spread spread;
  };
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

// On a terminal: one line redrawn in place at most 5 times a second. Otherwise (a log file):
// a plain line at every quarter of the epoch.
class ProgressLine {
 public:
  ProgressLine(bool enabled, std::string label, int64_t total);
  // `loss` is called only when the line is actually printed (reading it may sync a device);
  // an empty one shows no loss.
  void update(int64_t done, const std::function<double()>& loss, double images_per_second);
  void finish();  // clears the line on a terminal

 private:
  bool enabled_, tty_;
  std::string label_;
  int64_t total_;
  int next_quarter_ = 1;
  std::chrono::steady_clock::time_point start_, last_;
  int64_t first_done_ = -1;  // the count at the first update (a resumed epoch starts later)
  bool drawn_ = false;
};

// The running mean loss for the progress line without stalling the GPU: each read returns the
// value of the last asynchronous copy that has landed and starts the next one, so the host
// never waits for the steps still queued (only the very first read waits). On the CPU the
// value is simply read.
class LaggedMean {
 public:
  explicit LaggedMean(const tensor::Device& dev);
  ~LaggedMean();  // a copy still in flight lands before its pinned buffer is released
  LaggedMean(const LaggedMean&) = delete;
  LaggedMean& operator=(const LaggedMean&) = delete;
  // The mean sum / count, as of the latest copy that has landed.
  double read(const Tensor& sum, int64_t count);

 private:
  tensor::Device dev_;
  Tensor host_;
  tensor::Event landed_;
  int64_t count_at_copy_ = 0;
  bool pending_ = false, first_ = true;
  double value_ = 0;
};

}  // namespace mlai::nn
