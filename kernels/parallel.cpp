// The CPU kernels' thread pool (parallel.h). One run at a time: a Job holds the block function
// and its own counters, so a worker that wakes late for a finished job finds no block left and
// never touches the next one. Idle workers spin for up to kSpin, then sleep on a condition
// variable until the next job. A block's exception (bad_alloc of a scratch row) is caught where
// it happens and rethrown to the caller once every block is done.
#include "kernels/parallel.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/gemm.h"

namespace mlai::kernels::cpu {

namespace {

constexpr auto kSpin = std::chrono::microseconds(50);

int env_threads(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);  // OMP_NUM_THREADS may be a list ("8,2"): the first
  return end != v && n > 0 ? static_cast<int>(std::min<long>(n, 1024)) : 0;
}

int node_cpus() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

int affinity_cpus() {
  cpu_set_t set;  // the CPUs this process may use (a Slurm cgroup, taskset), not the node's
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return node_cpus();
}

int detect_threads(int local_ranks) {
  return default_threads(env_threads("MLAI_NUM_THREADS"), env_threads("OMP_NUM_THREADS"),
                         affinity_cpus(), node_cpus(), local_ranks);
}

std::atomic<int> g_pool_size{0};  // 0: not decided yet
std::atomic<bool> g_pool_started{false};

thread_local int tl_limit = 0;  // 0: pool_threads()

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t blocks;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex error_mu;
  std::exception_ptr error;  // the first block's exception, rethrown by the caller
  // Takes blocks until none is left. A block that throws still counts as done, so the caller
  // never returns (and frees fn) while another thread could still claim a block.
  void work() {
    for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < blocks;) {
      try {
        (*fn)(k);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 1; i < threads; ++i) std::thread([this] { serve(); }).detach();
  }

  bool run(int64_t blocks, const std::function<void(int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->blocks = blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) cv_.notify_all();
    LimitGuard guard;  // kernels inside the caller's blocks run inline
    job->work();
    for (int spins = 0; job->done.load(std::memory_order_acquire) < blocks; ++spins) {
      if (spins < 4096) {
        cpu_relax();
      } else {
        std::this_thread::yield();  // a worker was descheduled: let it have the core
      }
    }
    if (job->error) std::rethrow_exception(job->error);
    return true;
  }

 private:
  struct LimitGuard {
    int saved = tl_limit;
    LimitGuard() { tl_limit = 1; }
    ~LimitGuard() { tl_limit = saved; }
  };

  void serve() {
    tl_limit = 1;  // a kernel called inside a block runs inline
    uint64_t seen = 0;
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        cpu_relax();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) break;
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (generation_.load(std::memory_order_acquire) == seen) {
          sleepers_.fetch_add(1, std::memory_order_release);
          cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_release);
        }
        seen = generation_.load(std::memory_order_acquire);
        job = job_;
      }
      job->work();
    }
  }

  std::mutex run_mu_;  // one run at a time; a second caller runs inline
  std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

// Made on first use and never destroyed: its threads are detached and sleep until exit.
Pool& pool() {
  static Pool* p = [] {
    g_pool_started = true;
    return new Pool(pool_threads());
  }();
  return *p;
}

}  // namespace

int default_threads(int env_mlai, int env_omp, int affinity, int node_cpus, int local_ranks) {
  if (env_mlai > 0) return env_mlai;
  if (env_omp > 0) return env_omp;
  const bool bound = affinity < node_cpus;  // a CPU set of its own (srun, mpirun --bind-to)
  if (bound || local_ranks <= 1) return std::max(1, affinity);
  return std::max(1, affinity / local_ranks);
}

int pool_threads() {
  int n = g_pool_size.load();
  if (n == 0) {
    int expected = 0;
    g_pool_size.compare_exchange_strong(expected, detect_threads(1));
    n = g_pool_size.load();
  }
  return n;
}

int configure_threads(int local_ranks) {
  if (!g_pool_started) g_pool_size = detect_threads(local_ranks);
  // OpenBLAS runs single-threaded: large products are split into blocks on this pool
  // (kernels/gemm.cpp), so one set of threads serves every kernel.
  set_blas_threads(1);
  return pool_threads();
}

int max_threads() { return tl_limit > 0 ? tl_limit : pool_threads(); }

void set_max_threads(int n) { tl_limit = std::max(1, n); }

void run_blocks(int64_t blocks, const std::function<void(int64_t)>& fn, int64_t min_pool_blocks) {
  // Waking a sleeping worker costs tens of microseconds on a virtual machine: with fewer than
  // 4 blocks (of 32K elements, ~10 us each) that would eat the gain.
  if (blocks >= std::max<int64_t>(2, min_pool_blocks) && max_threads() > 1 &&
      pool().run(blocks, fn))
    return;
  for (int64_t k = 0; k < blocks; ++k) fn(k);
}

}  // namespace mlai::kernels::cpu
