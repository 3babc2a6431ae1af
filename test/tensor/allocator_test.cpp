// The caching allocator's reuse and statistics, checked on the CPU with a counting backend
// (the same code manages cudaMalloc'd memory on GPUs).
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "tensor/allocator.h"

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
