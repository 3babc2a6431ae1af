// The trace recorder (see trace.h): one process-wide list of events behind a mutex.
#include "tensor/trace.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <utility>

namespace mlai::trace {
namespace {

using Clock = std::chrono::steady_clock;
std::atomic<bool> g_on{false};
std::mutex g_mu;
std::vector<Event> g_events;
int64_t g_dropped = 0;
Clock::time_point g_t0;

}  // namespace

bool enabled() { return g_on.load(std::memory_order_relaxed); }

void start() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_events.clear();
  g_dropped = 0;
  g_t0 = Clock::now();
  g_on.store(true);
}

std::vector<Event> stop(int64_t* dropped) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_on.store(false);
  if (dropped != nullptr) *dropped = g_dropped;
  return std::exchange(g_events, {});
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
  t0_ = now_us();
}

Span::~Span() {
  if (on_) record(std::move(name_), category_, track_, t0_, now_us());
}

}  // namespace mlai::trace
