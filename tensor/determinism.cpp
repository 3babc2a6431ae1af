// See determinism.h. An atomic, so worker threads read it without a lock.
#include "tensor/determinism.h"

#include <atomic>

namespace mlai::tensor {

namespace {
std::atomic<bool> g_deterministic{false};
}  // namespace

void set_deterministic(bool on) { g_deterministic.store(on, std::memory_order_relaxed); }
bool deterministic() { return g_deterministic.load(std::memory_order_relaxed); }

}  // namespace mlai::tensor
