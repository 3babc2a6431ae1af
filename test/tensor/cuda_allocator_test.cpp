// The process-wide CUDA caching allocator on a real GPU: freed blocks are reused without a new
// cudaMalloc, the stats add up, an impossible request fails cleanly, and pinned memory works.
// Skips where there is no GPU or the build has no CUDA.
#include <gtest/gtest.h>

#include <stdexcept>

#include "tensor/allocator.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

class CudaAllocator : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
};

TEST_F(CudaAllocator, FreedBlockIsReusedWithoutNewRawAllocation) {
  CachingAllocator& a = cuda_allocator(0);
  const StreamHandle s = current_stream(Device::cuda(0)).handle();
  const size_t bytes = 3 * 1000 * 1000 + 17;  // a 4 MiB bin, unlikely to be cached already
  const AllocatorStats before = a.stats();
  void* p = a.allocate(bytes, s);
  ASSERT_NE(p, nullptr);
  const AllocatorStats mid = a.stats();
  EXPECT_LE(mid.raw_allocs - before.raw_allocs, 1);
  EXPECT_EQ(mid.current_bytes - before.current_bytes,
            static_cast<int64_t>(CachingAllocator::round_size(bytes)));
  EXPECT_GE(mid.peak_bytes, mid.current_bytes);
  a.deallocate(p);
  void* q = a.allocate(bytes, s);
  const AllocatorStats after = a.stats();
  EXPECT_EQ(q, p);
  EXPECT_EQ(after.raw_allocs, mid.raw_allocs);
  EXPECT_EQ(after.cache_hits, mid.cache_hits + 1);
  EXPECT_EQ(after.allocs, before.allocs + 2);
  a.deallocate(q);
  EXPECT_EQ(a.stats().current_bytes, before.current_bytes);
  a.empty_cache();
  const AllocatorStats emptied = a.stats();
  EXPECT_EQ(emptied.reserved_bytes, emptied.current_bytes);  // nothing cached any more
  EXPECT_GT(emptied.raw_frees, after.raw_frees);
}

TEST_F(CudaAllocator, ImpossibleRequestThrowsAndLeavesTheDeviceUsable) {
  CachingAllocator& a = cuda_allocator(0);
  EXPECT_THROW(a.allocate(size_t{1} << 52), std::runtime_error);  // 4 PiB
  // The out-of-memory error was cleared: the next kernel launch checks cleanly.
  Tensor t = Tensor::full({1000}, 2.0, DType::kFloat32, Device::cuda(0));
  EXPECT_EQ(sum(t).item(), 2000.0);
}

TEST_F(CudaAllocator, TensorsOnTheGpuAllocateThroughTheCache) {
  CachingAllocator& a = cuda_allocator(0);
  { Tensor warm = Tensor::empty({12345}, DType::kFloat32, Device::cuda(0)); }
  const AllocatorStats before = a.stats();
  { Tensor t = Tensor::empty({12345}, DType::kFloat32, Device::cuda(0)); }
  const AllocatorStats after = a.stats();
  EXPECT_EQ(after.raw_allocs, before.raw_allocs);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 1);
}

TEST_F(CudaAllocator, PinnedHostMemoryRoundTrip) {
  Tensor host = Tensor::empty({4099}, DType::kFloat32, Device::cpu(), /*pinned=*/true);
  EXPECT_TRUE(host.is_pinned());
  fill_(host, 1.5);
  Tensor gpu = Tensor::empty({4099}, DType::kFloat32, Device::cuda(0));
  gpu.copy_from(host, /*async=*/true);
  current_stream(Device::cuda(0)).synchronize();
  EXPECT_EQ(sum(gpu).item(), 1.5 * 4099);
}

}  // namespace
}  // namespace mlai::tensor
