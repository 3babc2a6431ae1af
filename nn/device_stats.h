// --log-device-stats, Lightning's DeviceStatsMonitor: what a run used of its machine each
// epoch, for sizing batches and Slurm requests (--mem, --cpus-per-task): on a GPU the caching
// allocator's peak (PyTorch's max_memory_allocated) and reserved memory (memory_reserved), on
// the CPU backend the same peak for CPU tensors (tensor/allocator.h's count: what the tensors
// held at most, which resident memory blurs with what malloc keeps), and on every host the
// process's resident memory, its peak, and the CPU it kept busy (100% = one core). Per epoch,
// the maximum over ranks (the rank that limits the job).
#pragma once

#include <chrono>

#include "tensor/device.h"

namespace mlai::nn {

struct DeviceStats {
  double gpu_peak_mb = -1, gpu_reserved_mb = -1;  // -1: not a GPU run
  double cpu_tensor_peak_mb = -1;                 // -1: not a CPU run
  double host_rss_mb = 0, host_peak_rss_mb = 0, host_cpu_percent = 0;
};

// The process's resident set now (/proc/self/statm) and at its peak (getrusage's ru_maxrss),
// in MiB, and the CPU seconds of all its threads (user + system).
double host_rss_mb();
double host_peak_rss_mb();
double process_cpu_seconds();

class DeviceStatsMonitor {
 public:
  explicit DeviceStatsMonitor(const tensor::Device& device) : device_(device) {}
  // The epoch begins: the GPU allocator's peak restarts, the CPU clock is read.
  void start_epoch();
  // Since start_epoch (this process only; reduce over ranks with max_over_ranks).
  DeviceStats read() const;

 private:
  tensor::Device device_;
  double cpu0_ = 0;
  std::chrono::steady_clock::time_point wall0_{};
};

}  // namespace mlai::nn
