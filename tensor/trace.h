// A timeline of what the training thread did, for Chrome's trace event format (open it in
// ui.perfetto.dev or chrome://tracing): spans with a name, a category and a track, recorded only
// between start() and stop() (mlai_train --profiler-trace). While off, a Span costs one relaxed
// atomic load. Times are host wall clock: on a GPU kernels run asynchronously, so a span shows
// when its work was queued, and the GPU's time shows up in whichever span next waits for it.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace mlai::trace {

// Track 0 is the training thread; kBucketTrack + k the allreduce of gradient bucket k, from its
// launch (during backward) to the wait that found it done (an upper bound on its duration).
// Spans may be recorded from any thread (a mutex guards the list).
constexpr int kBucketTrack = 1000;
// kWorkerTrack + w: data-loader worker w assembling (and on the CPU augmenting) batches.
constexpr int kWorkerTrack = 100;

struct Event {
  std::string name;
  std::string category;  // "trainer", "forward", "backward", "comm"
  int track = 0;
  double start_us = 0, duration_us = 0;  // microseconds since start()
};

bool enabled();
// Clears what was recorded and records from now on (time 0: now).
void start();
// Stops recording and returns the events, in the order they ended. At most `kMaxEvents` are
// kept (`dropped` counts the rest).
std::vector<Event> stop(int64_t* dropped = nullptr);
constexpr size_t kMaxEvents = 2'000'000;
double now_us();  // since start()
void record(std::string name, const char* category, int track, double start_us, double end_us);

// Times its own lifetime as one event (nothing while tracing is off). A name that must be
// built ("batch " + number) is passed as a callable, called only while recording, so the hot
// paths pay nothing for it otherwise.
class Span {
 public:
  Span(std::string_view name, const char* category, int track = 0);
  template <class NameFn, class = std::enable_if_t<std::is_invocable_r_v<std::string, NameFn>>>
  Span(NameFn&& name, const char* category, int track = 0) : Span(std::string_view(), category, track) {
    if (on_) name_ = name();
  }
  ~Span();
  void cancel() { on_ = false; }  // records nothing after all
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  bool on_;
  std::string name_;
  const char* category_ = "";
  int track_ = 0;
  double t0_ = 0;
};

}  // namespace mlai::trace
