// --profiler-trace: a timeline of chosen training steps on every rank, as Chrome trace events
// in the run's trace.json (what Lightning's PyTorchProfiler writes for TensorBoard's trace
// view; here for ui.perfetto.dev or chrome://tracing). Each rank is a process (pid = rank),
// its training thread track 0 with the steps and what the profiler times inside them, modules'
// forwards and autograd's backward ops nested below; each data-loader worker and each gradient
// bucket's allreduce has a track of its own, so a data path that cannot keep up and the
// overlap of communication with backward show.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "dist/communicator.h"
#include "nn/trace_report.h"
#include "nn/trainer.h"
#include "tensor/trace.h"

namespace mlai::nn {

void Trainer::trace_at_step(std::pair<int64_t, int64_t> steps, int64_t batch, int64_t accum,
                            std::optional<trace::Span>& span) {
  span.reset();
  if (steps.first < 0) return;
  if (trace::enabled() && state_.global_step >= steps.second) {
    end_trace(steps);
  } else if (!trace::enabled() && state_.global_step == steps.first && !trace_written_) {
    // Every rank's time 0 is the same moment, to the barrier's exit skew (every rank reaches
    // this step: they take the same steps).
    if (group_.world() > 1) dist::allreduce_host(group_, 0.0);
    model_->label_for_trace();
    trace::start(device_);  // (on a GPU, also timed by the GPU: trace::kGpuTrack)
  }
  if (!trace::enabled()) return;
  std::string name = "step " + std::to_string(state_.global_step);
  if (accum > 1) name += ", batch " + std::to_string(batch);
  span.emplace(name, "trainer");
}

void Trainer::end_trace(std::pair<int64_t, int64_t> steps) {
  if (!trace::enabled()) {  // training ended without reaching START
    if (main_ && !trace_written_)
      std::printf("--profiler-trace %s: no step of it was trained (training ended at step %lld); "
                  "no trace written\n",
                  cfg_.profiler_trace.c_str(), static_cast<long long>(state_.global_step));
    trace_written_ = true;
    return;
  }
  int64_t dropped = 0;
  const std::vector<trace::Event> events = trace::stop(&dropped);
  trace_written_ = true;
  const int rank = group_.rank();
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  const nlohmann::json mine = chrome_trace_events(
      events, rank,
      "rank " + std::to_string(rank) + " (" + host + ", " + device_.str() + ")");
  // Each rank's events as the inside of a JSON array, joined on rank 0.
  std::string text = mine.dump();
  text = text.substr(1, text.size() - 2);
  const std::vector<std::string> all = dist::gather_host(group_, text);
  const double total_dropped = group_.world() > 1
                                   ? dist::allreduce_host(group_, static_cast<double>(dropped))
                                   : static_cast<double>(dropped);
  if (!main_ || dev_run_ || dir_.empty()) return;
  const std::string path = dir_ + "/trace.json";
  const bool gpu = device_.is_cuda();
  const nlohmann::json other = {
      {"mlai_steps", cfg_.profiler_trace},
      {"world_size", group_.world()},
      {"clock", gpu ? "host wall clock, microseconds from the barrier before the first step; "
                      "the GPU track: when the stream began and finished each training-thread "
                      "span's work, on the host's clock (CUDA events)"
                    : "host wall clock, microseconds from the barrier before the first step"}};
  write_chrome_trace(path, all, other);
  const std::string summary_path = dir_ + "/trace_summary.txt";
  const std::string table = trace_summary(events);
  {
    std::ofstream sum(summary_path + ".tmp");
    sum << "--profiler-trace " << cfg_.profiler_trace << ", rank 0 (" << device_.str()
        << "): spans by name, host wall clock" << (gpu ? " and GPU time" : "")
        << "; spans nest, so rows overlap\n"
        << table;
    sum.flush();
    if (!sum) throw std::runtime_error(summary_path + ": could not write the summary");
  }
  std::filesystem::rename(summary_path + ".tmp", summary_path);
  std::printf("--profiler-trace: steps %lld to %lld of %d rank(s) in %s (%zu events on rank 0%s); "
              "open it in https://ui.perfetto.dev or chrome://tracing\n",
              static_cast<long long>(steps.first),
              static_cast<long long>(std::min(steps.second, state_.global_step) - 1),
              group_.world(), path.c_str(), events.size(),
              total_dropped > 0 ? ", some dropped: over the limit per rank" : "");
  // The top of the table, as Lightning's profilers print theirs at the end of fit.
  std::string top = trace_summary(events, 12);
  std::printf("--profiler-trace summary (rank 0; all rows in %s):\n%s", summary_path.c_str(),
              top.c_str());
  std::fflush(stdout);
}

}  // namespace mlai::nn
