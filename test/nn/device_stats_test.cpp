// --log-device-stats (Lightning's DeviceStatsMonitor): the host readings follow what the
// process does (memory it touches raises its resident set, a busy thread its CPU share), and
// the trainer logs them each epoch to metrics.csv and TensorBoard, with no GPU columns on the
// CPU. The GPU allocator's figures are the allocator's own stats (tested with the allocator).
#include "nn/device_stats.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "nn/trainer.h"
#include "tensor/allocator.h"
#include "tensor/tensor.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

TEST(DeviceStats, HostReadingsFollowTheProcess) {
  const double rss0 = host_rss_mb();
  EXPECT_GT(rss0, 1.0);
  {
    std::vector<char> block(size_t{256} << 20);
    std::memset(block.data(), 1, block.size());  // touched: resident
    EXPECT_GT(host_rss_mb(), rss0 + 200.0);
    EXPECT_GT(host_peak_rss_mb(), rss0 + 200.0);
    EXPECT_EQ(block[12345], 1);
  }
  // Busy until this process has used 0.2 s of CPU, however long that takes on a loaded
  // machine: the monitor's share is then at least 0.2 s over the wall time that took.
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = process_cpu_seconds();
  DeviceStatsMonitor m(tensor::Device::cpu());
  m.start_epoch();
  volatile double sink = 0;
  while (process_cpu_seconds() - cpu0 < 0.2) sink = sink + 1.0;
  const DeviceStats s = m.read();
  const double wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s.host_cpu_percent, 0.9 * 100.0 * 0.2 / wall) << "wall " << wall << " s";
  EXPECT_LE(s.host_cpu_percent, 100.0 * std::thread::hardware_concurrency() + 10.0);
  EXPECT_EQ(s.gpu_peak_mb, -1);
  EXPECT_EQ(s.gpu_reserved_mb, -1);
  EXPECT_GE(s.cpu_tensor_peak_mb, 0);
}

// The CPU tensors' peak: a 64 MiB tensor made and freed within an epoch raises it by its size,
// and the next epoch starts from what is held then.
TEST(DeviceStats, CpuTensorPeakCountsTensorsOnly) {
  DeviceStatsMonitor m(tensor::Device::cpu());
  m.start_epoch();
  const double held = static_cast<double>(tensor::cpu_tensor_stats().current_bytes) / (1 << 20);
  {
    tensor::Tensor big = tensor::Tensor::empty({int64_t{16} << 20});  // 64 MiB of float32
    EXPECT_GE(static_cast<double>(tensor::cpu_tensor_stats().current_bytes) / (1 << 20),
              held + 64.0);
  }
  std::vector<char> not_a_tensor(size_t{128} << 20, 1);  // malloc'd, not counted
  const DeviceStats s = m.read();
  EXPECT_GE(s.cpu_tensor_peak_mb, held + 64.0);
  EXPECT_LT(s.cpu_tensor_peak_mb, held + 64.0 + 16.0) << "only tensors count";
  m.start_epoch();
  EXPECT_LT(m.read().cpu_tensor_peak_mb, held + 16.0) << "the peak restarts each epoch";
  EXPECT_EQ(not_a_tensor[7], 1);
}

TEST_F(TrainerTest, LogDeviceStatsEachEpoch) {
  Config c = base();  // 2 epochs
  c.log_device_stats = true;
  const FitResult r = Trainer(c).fit();
  const std::vector<std::string> rows = metrics_rows(r.version_dir);
  ASSERT_GE(rows.size(), 3u);
  for (size_t row = 1; row <= 2; ++row) {
    EXPECT_GT(std::stod(cell(rows, row, "host_rss_mb")), 1.0) << rows[row];
    EXPECT_GE(std::stod(cell(rows, row, "host_peak_rss_mb")),
              std::stod(cell(rows, row, "host_rss_mb")));
    EXPECT_GT(std::stod(cell(rows, row, "host_cpu_percent")), 0.0);
    EXPECT_EQ(cell(rows, row, "gpu_peak_mem_mb"), "") << "no GPU on this run";
    EXPECT_GT(std::stod(cell(rows, row, "cpu_tensor_peak_mb")), 0.0);
  }
  EXPECT_EQ(scalar_values(r.version_dir, "device_stats/host_rss_mb").size(), 2u);
  EXPECT_EQ(scalar_values(r.version_dir, "device_stats/host_cpu_percent").size(), 2u);
  EXPECT_TRUE(scalar_values(r.version_dir, "device_stats/gpu_peak_mem_mb").empty());

  Config off = base();  // off by default: empty cells, no scalars
  off.epochs = 1;
  off.experiment_name = "off";
  const FitResult r0 = Trainer(off).fit();
  EXPECT_EQ(cell(metrics_rows(r0.version_dir), 1, "host_rss_mb"), "");
  EXPECT_TRUE(scalar_values(r0.version_dir, "device_stats/host_rss_mb").empty());
}

}  // namespace
}  // namespace mlai::nn
