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
    trace::start();
  }
  if (!trace::enabled()) return;
  std::string name = "step " + std::to_string(state_.global_step);
  if (accum > 1) name += ", batch " + std::to_string(batch);
  span.emplace(name, "trainer");
}

namespace {

nlohmann::json metadata(const char* what, int pid, int tid, nlohmann::json args) {
  nlohmann::json m = {{"name", what}, {"ph", "M"}, {"pid", pid}, {"args", std::move(args)}};
  if (tid >= 0) m["tid"] = tid;
  return m;
}

}  // namespace

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
  nlohmann::json mine = nlohmann::json::array();
  mine.push_back(metadata("process_name", rank, -1,
                          {{"name", "rank " + std::to_string(rank) + " (" + host + ", " +
                                        device_.str() + ")"}}));
  mine.push_back(metadata("process_sort_index", rank, -1, {{"sort_index", rank}}));
  mine.push_back(metadata("thread_name", rank, 0, {{"name", "training thread"}}));
  std::set<int> tracks;
  for (const trace::Event& e : events) {
    tracks.insert(e.track);
    mine.push_back({{"name", e.name},
                    {"cat", e.category},
                    {"ph", "X"},
                    {"ts", e.start_us},
                    {"dur", e.duration_us},
                    {"pid", rank},
                    {"tid", e.track}});
  }
  for (int t : tracks) {
    std::string name;
    if (t >= trace::kBucketTrack)
      name = "gradient bucket " + std::to_string(t - trace::kBucketTrack) + " allreduce";
    else if (t >= trace::kWorkerTrack)
      name = "data worker " + std::to_string(t - trace::kWorkerTrack);
    if (name.empty()) continue;
    mine.push_back(metadata("thread_name", rank, t, {{"name", name}}));
    mine.push_back(metadata("thread_sort_index", rank, t, {{"sort_index", t}}));
  }
  // Each rank's events as the inside of a JSON array, joined on rank 0.
  std::string text = mine.dump();
  text = text.substr(1, text.size() - 2);
  const std::vector<std::string> all = dist::gather_host(group_, text);
  const double total_dropped = group_.world() > 1
                                   ? dist::allreduce_host(group_, static_cast<double>(dropped))
                                   : static_cast<double>(dropped);
  if (!main_ || dev_run_ || dir_.empty()) return;
  const std::string path = dir_ + "/trace.json";
  {
    std::ofstream out(path + ".tmp");
    out << "{\"traceEvents\": [";
    bool first = true;
    for (const std::string& r : all) {
      if (r.empty()) continue;
      out << (first ? "\n" : ",\n") << r;
      first = false;
    }
    const nlohmann::json other = {
        {"mlai_steps", cfg_.profiler_trace},
        {"world_size", group_.world()},
        {"clock", "host wall clock, microseconds from the barrier before the first step; on a "
                  "GPU, spans show when work was queued (kernels run asynchronously)"}};
    out << "\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": " << other.dump() << "}\n";
    if (!out) throw std::runtime_error(path + ": could not write the trace");
  }
  std::filesystem::rename(path + ".tmp", path);
  std::printf("--profiler-trace: steps %lld to %lld of %d rank(s) in %s (%zu events on rank 0%s); "
              "open it in https://ui.perfetto.dev or chrome://tracing\n",
              static_cast<long long>(steps.first),
              static_cast<long long>(std::min(steps.second, state_.global_step) - 1),
              group_.world(), path.c_str(), events.size(),
              total_dropped > 0 ? ", some dropped: over the limit per rank" : "");
  std::fflush(stdout);
}

}  // namespace mlai::nn
