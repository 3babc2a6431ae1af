// See determinism.h. An atomic, so worker threads read it without a lock.
#include "tensor/determinism.h"

#include <atomic>

namespace mlai::tensor {

namespace {
std::atomic<bool> g_deterministic{false};
std::atomic<bool> g_cudnn_benchmark{true};
}  // namespace

void set_deterministic(bool on) { g_deterministic.store(on, std::memory_order_relaxed); }
bool deterministic() { return g_deterministic.load(std::memory_order_relaxed); }
void set_cudnn_benchmark(bool on) { g_cudnn_benchmark.store(on, std::memory_order_relaxed); }
bool cudnn_benchmark() { return g_cudnn_benchmark.load(std::memory_order_relaxed); }

}  // namespace mlai::tensor
