// The FLOP count of the matrix products (autograd/ops.h): the Trainer's throughput and
// mlai_bench_step's TFLOP/s and MFU come from it.
#include <atomic>

#include "autograd/ops.h"

namespace mlai::autograd {

namespace {
std::atomic<int64_t> g_flops{0};
}  // namespace

int64_t flop_count() { return g_flops.load(std::memory_order_relaxed); }

void add_flops(int64_t flops) { g_flops.fetch_add(flops, std::memory_order_relaxed); }

}  // namespace mlai::autograd
