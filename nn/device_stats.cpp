// Memory and CPU use for --log-device-stats (see device_stats.h).
#include "nn/device_stats.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "tensor/allocator.h"

namespace mlai::nn {

namespace {
constexpr double kMiB = 1024.0 * 1024.0;
}  // namespace

double host_rss_mb() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / kMiB;
}

double host_peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // (kilobytes on Linux)
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * t.tv_usec; };
  return s(u.ru_utime) + s(u.ru_stime);
}

void DeviceStatsMonitor::start_epoch() {
  if (device_.is_cuda()) {
    tensor::cuda_allocator(device_.index).reset_peak();
  } else {
    tensor::reset_cpu_tensor_peak();
  }
  cpu0_ = process_cpu_seconds();
  wall0_ = std::chrono::steady_clock::now();
}

DeviceStats DeviceStatsMonitor::read() const {
  DeviceStats s;
  if (device_.is_cuda()) {
    const tensor::AllocatorStats a = tensor::cuda_allocator(device_.index).stats();
    s.gpu_peak_mb = static_cast<double>(a.peak_bytes) / kMiB;
    s.gpu_reserved_mb = static_cast<double>(a.reserved_bytes) / kMiB;
  } else {
    s.cpu_tensor_peak_mb = static_cast<double>(tensor::cpu_tensor_stats().peak_bytes) / kMiB;
  }
  s.host_rss_mb = host_rss_mb();
  // (The kernel's high-water mark is read a moment later than the resident set, which other
  // threads may have shrunk in between: the peak is at least what was just read.)
  s.host_peak_rss_mb = std::max(host_peak_rss_mb(), s.host_rss_mb);
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0_).count();
  s.host_cpu_percent = 100.0 * (process_cpu_seconds() - cpu0_) / std::max(wall, 1e-9);
  return s;
}

}  // namespace mlai::nn
