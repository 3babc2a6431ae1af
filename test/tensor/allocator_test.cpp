// The caching allocator's reuse and statistics, checked on the CPU with a counting backend
// (the same code manages cudaMalloc'd memory on GPUs).
#include "tensor/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <set>
#include <stdexcept>

namespace mlai::tensor {
namespace {

struct CountingMemory : RawMemory {
  int* live;
  size_t limit;
  size_t used = 0;
  std::map<void*, size_t> sizes;
  CountingMemory(int* l, size_t lim) : live(l), limit(lim) {}
  void* raw_alloc(size_t bytes) override {
    if (used + bytes > limit) return nullptr;
    void* p = std::malloc(bytes);
    used += bytes;
    sizes[p] = bytes;
    ++*live;
    return p;
  }
  void raw_free(void* p) override {
    used -= sizes.at(p);
    sizes.erase(p);
    std::free(p);
    --*live;
  }
  const char* name() const override { return "counting"; }
};

TEST(CachingAllocator, RoundsSizesIntoBins) {
  EXPECT_EQ(CachingAllocator::round_size(0), 512u);
  EXPECT_EQ(CachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CachingAllocator::round_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::round_size((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(CachingAllocator::round_size(3u << 20), 4u << 20);
}

TEST(CachingAllocator, ReusesFreedBlocksWithoutNewRawAllocations) {
  int live = 0;
  CachingAllocator a(std::make_unique<CountingMemory>(&live, 1u << 30));
  void* p = a.allocate(1000);
  a.deallocate(p);
  void* q = a.allocate(900);  // same 1024-byte bin
  EXPECT_EQ(p, q);
  auto s = a.stats();
  EXPECT_EQ(s.raw_allocs, 1);
  EXPECT_EQ(s.cache_hits, 1);
  EXPECT_EQ(s.allocs, 2);
  EXPECT_EQ(s.current_bytes, 1024);
  a.deallocate(q);
  EXPECT_EQ(a.stats().current_bytes, 0);
  EXPECT_EQ(live, 1);  // kept in the cache
  a.empty_cache();
  EXPECT_EQ(live, 0);
  EXPECT_EQ(a.stats().reserved_bytes, 0);
  EXPECT_EQ(a.stats().raw_frees, 1);
}

TEST(CachingAllocator, TracksPeakAndDoesNotReuseTooLargeBlocks) {
  int live = 0;
  CachingAllocator a(std::make_unique<CountingMemory>(&live, 1u << 30));
  void* big = a.allocate(64u << 20);
  void* small = a.allocate(4096);
  EXPECT_EQ(a.stats().peak_bytes, (64 << 20) + 4096);
  a.deallocate(big);
  void* tiny = a.allocate(4096);  // must not take the 64 MiB block
  EXPECT_NE(tiny, big);
  EXPECT_EQ(a.stats().raw_allocs, 3);
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_bytes, 8192);
  a.deallocate(small);
  a.deallocate(tiny);
}

TEST(CachingAllocator, KeepsStreamsApart) {
  int live = 0;
  CachingAllocator a(std::make_unique<CountingMemory>(&live, 1u << 30));
  auto s1 = reinterpret_cast<StreamHandle>(0x1000);
  auto s2 = reinterpret_cast<StreamHandle>(0x2000);
  void* p = a.allocate(2048, s1);
  a.deallocate(p);
  void* q = a.allocate(2048, s2);  // another stream's cached block is not reused
  EXPECT_NE(p, q);
  void* r = a.allocate(2048, s1);
  EXPECT_EQ(p, r);
  a.deallocate(q);
  a.deallocate(r);
}

// CUDA graph pools: blocks allocated while a pool is open never serve the stream's own
// allocations afterwards, are reused when the same pool is reopened (a second capture), and go
// back to the backend once the pool is retired, including those still in use at that time.
TEST(CachingAllocator, PrivatePoolsKeepCapturedMemoryApart) {
  int live = 0;
  CachingAllocator a(std::make_unique<CountingMemory>(&live, 1u << 30));
  auto* s = reinterpret_cast<StreamHandle>(0x1000);
  const StreamHandle tag = CachingAllocator::new_pool_tag();
  EXPECT_NE(tag, s);
  a.open_pool(s, tag);
  EXPECT_THROW(a.open_pool(s, tag), std::logic_error);  // one pool per stream at a time
  void* captured = a.allocate(4096, s);
  void* kept = a.allocate(8192, s);  // a graph output: alive after the capture
  a.deallocate(captured);            // an intermediate: freed inside the capture
  a.close_pool(s);
  void* eager = a.allocate(4096, s);  // same size, same stream: must not get the pool's block
  EXPECT_NE(eager, captured);
  EXPECT_EQ(a.stats().raw_allocs, 3);
  a.open_pool(s, tag);
  EXPECT_EQ(a.allocate(4096, s), captured);  // the pool's own block, reused
  a.deallocate(captured);
  a.close_pool(s);
  a.empty_cache();  // (on out-of-memory retries too) a live graph's pool is not emptied
  EXPECT_EQ(live, 3);
  a.deallocate(eager);
  EXPECT_EQ(a.allocate(4096, s), eager);  // the stream's cache is untouched by the pool
  a.retire_pool(tag);
  EXPECT_EQ(live, 2);  // the pool's cached block went back; `kept` and `eager` remain
  a.deallocate(kept);
  EXPECT_EQ(live, 1);  // a retired pool's block goes straight back to the backend
  a.deallocate(eager);
  EXPECT_EQ(a.stats().current_bytes, 0);
}

TEST(CachingAllocator, EmptiesCacheAndRetriesWhenOutOfMemory) {
  int live = 0;
  CachingAllocator a(std::make_unique<CountingMemory>(&live, 5u << 20));
  void* p = a.allocate(2u << 20);
  a.deallocate(p);                 // cached: 2 of the 5 MiB stay reserved
  void* q = a.allocate(3u << 20);  // 4 MiB bin: fits only once the cache is given back
  EXPECT_EQ(a.stats().raw_frees, 1);
  EXPECT_EQ(a.stats().reserved_bytes, 4 << 20);
  try {
    a.allocate(4u << 20);
    ADD_FAILURE() << "expected an out-of-memory error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
  a.deallocate(q);
}

}  // namespace
}  // namespace mlai::tensor
