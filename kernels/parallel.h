// Threads for the CPU kernels, the GEMM included once configure_threads has made OpenBLAS
// single-threaded (gemm.cpp then splits large products into blocks here). Work is cut into fixed
// blocks whose bounds depend only on the sizes and the grain, never on the thread count, and a
// reduction combines its per-block partial sums in block order: so a result has the same bits
// on 1 thread or 64, and CPU runs stay reproducible across machines.
//
// The threads are mlai's own small pool rather than OpenMP: between kernels OpenMP's threads
// spin (libgomp's default wait policy, set only by environment), and on a busy node they fought
// OpenBLAS's threads for the cores: ResNet steps ran 1.7x slower on 2 threads than on 1. The
// pool's threads spin for a few microseconds, then sleep.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

namespace mlai::kernels::cpu {

// The threads the kernels use: MLAI_NUM_THREADS, else OMP_NUM_THREADS (the Slurm scripts set it
// to the rank's --cpus-per-task), else the CPUs this process may run on (shared among the
// node's ranks, see configure_threads); fixed when the pool starts.
int pool_threads();

// The thread count of one of `local_ranks` processes on a node: the environment's
// (MLAI_NUM_THREADS, then OMP_NUM_THREADS; 0 where unset) if given; else the CPUs this process
// may run on, divided among the node's ranks when it is not bound to CPUs of its own (mpirun
// without binding: every rank sees them all, and 4 ranks x 32 threads on 32 cores would crawl).
int default_threads(int env_mlai, int env_omp, int affinity_cpus, int node_cpus, int local_ranks);

// For a process that is one of `local_ranks` on its node (data parallelism): sizes the kernel
// pool by default_threads and makes OpenBLAS single-threaded, so that matrix products run on
// the pool too (OPENBLAS_NUM_THREADS no longer matters after it). Call before the first
// kernel; returns the pool's size.
int configure_threads(int local_ranks);

// This thread's limit (default: pool_threads()): 1 runs its kernels inline, any other value
// lets them use the whole pool. The data loader's workers set 1, so their kernels do not compete
// with the training thread's.
int max_threads();
void set_max_threads(int n);

// Runs fn(k) for k in [0, blocks) on the pool (the caller takes part) and returns when all are
// done; an exception from a block is rethrown then. Inline, in order, when blocks <
// min_pool_blocks (too little work to pay for waking the threads; callers whose blocks are
// each large pass 2), the limit is 1, or the pool is busy (a kernel called from inside a
// block, or from another thread meanwhile).
void run_blocks(int64_t blocks, const std::function<void(int64_t)>& fn,
                int64_t min_pool_blocks = 4);

inline int64_t num_blocks(int64_t n, int64_t grain) { return n <= 0 ? 0 : (n + grain - 1) / grain; }

// fn(block, begin, end) for the blocks [k * grain, min(n, (k + 1) * grain)) of [0, n).
template <class F>
void parallel_blocks(int64_t n, int64_t grain, F&& fn) {
  const int64_t blocks = num_blocks(n, grain);
  if (blocks == 1) {
    fn(int64_t{0}, int64_t{0}, n);
    return;
  }
  run_blocks(blocks, [&](int64_t k) { fn(k, k * grain, std::min(n, (k + 1) * grain)); });
}

// Elementwise work: fn(begin, end) over blocks of `grain` elements.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  parallel_blocks(n, grain, [&](int64_t, int64_t begin, int64_t end) { fn(begin, end); });
}

// A grain for elementwise loops: 32K elements (128 KB of float), enough work per block to pay for
// waking a thread, few enough blocks to spread.
constexpr int64_t kElementGrain = int64_t{1} << 15;

}  // namespace mlai::kernels::cpu
