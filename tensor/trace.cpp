// The trace recorder (see trace.h): one process-wide list of events behind a mutex, and for
// start(gpu) a pool of CUDA timing events that the owning thread's spans mark the stream with.
#include "tensor/trace.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <utility>

#include "tensor/cuda_graph.h"
#include "tensor/stream.h"

namespace mlai::trace {
namespace {

using Clock = std::chrono::steady_clock;
std::atomic<bool> g_on{false};
std::mutex g_mu;
std::vector<Event> g_events;
int64_t g_dropped = 0;
Clock::time_point g_t0;

// GPU timing (start(gpu)): spans of g_owner's thread mark its current stream with events from
// the pool (kept across traces: creating an event costs more than recording one).
struct GpuSpan {
  std::string name;
  const char* category;
  int begin, end;  // indices into g_pool
};
std::atomic<bool> g_gpu_on{false};
uint64_t g_generation = 0;  // counts start() calls: a span's pool index is only good within one
tensor::Device g_gpu;
std::thread::id g_owner;
std::vector<tensor::Event> g_pool;
size_t g_pool_used = 0;
std::vector<GpuSpan> g_gpu_spans;
tensor::Event g_ref;      // recorded at start() on the idle stream
double g_ref_host_us = 0;  // the host time it ran at

// Whether this thread's span should mark the GPU now (never inside a graph capture).
bool gpu_timing_here() {
  return g_gpu_on.load(std::memory_order_relaxed) && std::this_thread::get_id() == g_owner &&
         !tensor::capturing(g_gpu);
}

// Records the next pool event on the stream; -1 once the pool is at its limit.
int gpu_mark(uint64_t* generation) {
  int index;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    *generation = g_generation;
    if (g_pool_used >= 2 * kMaxGpuSpans) {
      ++g_dropped;
      return -1;
    }
    if (g_pool_used == g_pool.size()) g_pool.emplace_back(g_gpu, /*timing=*/true);
    index = static_cast<int>(g_pool_used++);
  }
  g_pool[static_cast<size_t>(index)].record(tensor::current_stream(g_gpu));
  return index;
}

}  // namespace

bool enabled() { return g_on.load(std::memory_order_relaxed); }

void start(const tensor::Device& gpu) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_events.clear();
  g_gpu_spans.clear();
  g_pool_used = 0;
  ++g_generation;
  g_dropped = 0;
  g_t0 = Clock::now();
  g_gpu_on.store(false);
  if (gpu.is_cuda()) {
    g_gpu = gpu;
    g_owner = std::this_thread::get_id();
    const tensor::Stream stream = tensor::current_stream(gpu);
    stream.synchronize();  // idle: the reference event runs as soon as it is recorded
    g_ref = tensor::Event(gpu, /*timing=*/true);
    const double before = now_us();
    g_ref.record(stream);
    g_ref.synchronize();
    g_ref_host_us = 0.5 * (before + now_us());
    g_gpu_on.store(true);
  }
  g_on.store(true);
}

std::vector<Event> stop(int64_t* dropped) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_on.store(false);
  std::vector<Event> out = std::exchange(g_events, {});
  if (g_gpu_on.exchange(false)) {
    // In stream order, but a span may have marked another stream (a StreamGuard): wait for all.
    for (size_t i = 0; i < g_pool_used; ++i) g_pool[i].synchronize();
    for (GpuSpan& s : g_gpu_spans) {
      const tensor::Event& b = g_pool[static_cast<size_t>(s.begin)];
      const double start_us = g_ref_host_us + 1e3 * g_ref.elapsed_ms(b);
      const double dur_us = 1e3 * b.elapsed_ms(g_pool[static_cast<size_t>(s.end)]);
      if (out.size() >= kMaxEvents) {
        ++g_dropped;
        continue;
      }
      out.push_back(Event{std::move(s.name), s.category, kGpuTrack, start_us, dur_us});
    }
    g_gpu_spans.clear();
  }
  if (dropped != nullptr) *dropped = g_dropped;
  return out;
}

double now_us() {
  return std::chrono::duration<double, std::micro>(Clock::now() - g_t0).count();
}

void record(std::string name, const char* category, int track, double start_us, double end_us) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_on.load(std::memory_order_relaxed)) return;
  if (g_events.size() >= kMaxEvents) {
    ++g_dropped;
    return;
  }
  g_events.push_back(Event{std::move(name), category, track, start_us, end_us - start_us});
}

Span::Span(std::string_view name, const char* category, int track) : on_(enabled()) {
  if (!on_) return;
  name_ = name;
  category_ = category;
  track_ = track;
  if (gpu_timing_here()) gpu_begin_ = gpu_mark(&gpu_trace_);
  t0_ = now_us();
}

Span::~Span() {
  if (!on_) return;
  const double t1 = now_us();
  if (gpu_begin_ >= 0 && gpu_timing_here()) {
    uint64_t generation = 0;
    const int end = gpu_mark(&generation);
    if (end >= 0 && generation == gpu_trace_) {  // (a stop() and start() since reset the pool)
      std::lock_guard<std::mutex> lock(g_mu);
      if (g_on.load(std::memory_order_relaxed) && generation == g_generation)
        g_gpu_spans.push_back(GpuSpan{name_, category_, gpu_begin_, end});
    }
  }
  record(std::move(name_), category_, track_, t0_, t1);
}

}  // namespace mlai::trace
