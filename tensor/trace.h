// A timeline of what the training thread did, for Chrome's trace event format (open it in
// ui.perfetto.dev or chrome://tracing): spans with a name, a category and a track, recorded only
// between start() and stop() (mlai_train --profiler-trace). While off, a Span costs one relaxed
// atomic load. Times are host wall clock: on a GPU kernels run asynchronously, so a span shows
// when its work was queued. start(gpu) adds the GPU's side: see kGpuTrack.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tensor/device.h"

namespace mlai::trace {

// Track 0 is the training thread; kBucketTrack + k the allreduce of gradient bucket k, from its
// launch (during backward) to the wait that found it done (an upper bound on its duration).
// Spans may be recorded from any thread (a mutex guards the list).
constexpr int kBucketTrack = 1000;
// kWorkerTrack + w: data-loader worker w assembling (and on the CPU augmenting) batches.
constexpr int kWorkerTrack = 100;
// kGpuTrack: with start(gpu), every span the starting thread (the training thread) opens also
// records a pair of timing events on its current stream, and stop() adds the span again on
// this track, timed by the GPU: from the stream reaching the span's start to it finishing the
// span's work (idle time waiting for the host's launches included, so a step whose GPU spans
// sit right behind its host spans is host-bound). The GPU clock is put on the host's by an
// event recorded at start() on an idle stream: the two agree to about ten microseconds. Each
// such span costs the host two event records (a few microseconds). Spans opened or closed
// while the stream is capturing a CUDA graph are not GPU-timed (an event there is a graph node).
constexpr int kGpuTrack = 1;

struct Event {
  std::string name;
  std::string category;  // "trainer", "forward", "backward", "comm"
  int track = 0;
  double start_us = 0, duration_us = 0;  // microseconds since start()
};

bool enabled();
// Clears what was recorded and records from now on (time 0: now). With a CUDA device, the
// calling thread's spans are GPU-timed too (kGpuTrack); start() synchronizes its stream.
void start(const tensor::Device& gpu = tensor::Device::cpu());
// Stops recording and returns the events, in the order they ended (the GPU-timed copies after
// the rest; stop() waits for the GPU to reach them). At most `kMaxEvents` are kept and
// `kMaxGpuSpans` GPU-timed (`dropped` counts the rest of both).
std::vector<Event> stop(int64_t* dropped = nullptr);
constexpr size_t kMaxEvents = 2'000'000;
constexpr size_t kMaxGpuSpans = 200'000;
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
  int gpu_begin_ = -1;  // its start event in the GPU pool (kGpuTrack), -1 when not GPU-timed
  uint64_t gpu_trace_ = 0;  // which start() that pool index belongs to
};

}  // namespace mlai::trace
