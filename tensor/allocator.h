// Memory: a caching allocator that never returns memory to the system in steady state
// (the CUDA device allocator and the pinned-host allocator are instances of it), and the plain
// 64-byte aligned CPU allocator. The caching logic is backend-independent, so it is tested on
// the CPU with a counting backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/common.h"

namespace mlai::tensor {

using kernels::StreamHandle;

struct AllocatorStats {
  int64_t current_bytes = 0;   // bytes handed out and not yet freed (rounded sizes)
  int64_t peak_bytes = 0;      // high-water mark of current_bytes
  int64_t reserved_bytes = 0;  // bytes obtained from the backend (in use + cached)
  int64_t raw_allocs = 0;      // backend allocations (cudaMalloc calls)
  int64_t raw_frees = 0;       // backend frees (only on empty_cache or retry after OOM)
  int64_t allocs = 0;          // allocate() calls
  int64_t cache_hits = 0;      // allocate() calls served from the cache
};

// Where a caching allocator gets its memory: cudaMalloc, cudaHostAlloc, or a test backend.
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  virtual void* raw_alloc(size_t bytes) = 0;  // nullptr when out of memory
  virtual void raw_free(void* p) = 0;
  virtual const char* name() const = 0;
};

// Size-binned, stream-aware cache: a freed block goes back to the free list of the stream it
// was allocated on, keyed by its rounded size; a request takes the smallest cached block of
// that stream that fits and wastes at most a quarter of it. On backend OOM the cache is
// emptied and the allocation retried once; then a one-line error with the stats is thrown.
class CachingAllocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawMemory> backend);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes, StreamHandle stream = nullptr);
  void deallocate(void* p);
  void empty_cache();  // returns every cached (free) block to the backend
  AllocatorStats stats() const;
  void reset_peak();

  // Rounding: 512-byte steps below 1 MiB, 2 MiB steps above (fewer distinct sizes to cache).
  static size_t round_size(size_t bytes);

  // Private pools, for CUDA graph capture (tensor/cuda_graph.h). While a pool is open on
  // `stream`, blocks allocated on that stream come from, and go back to, the free lists of the
  // pool `tag` (an odd value, never a real stream's address) instead of the stream's own: the
  // memory a captured graph reads and writes is never handed to other work while it lives.
  // Reopening the same tag reuses its blocks. retire_pool frees the pool's cached blocks, and
  // its blocks still in use are freed to the backend when they come back.
  static StreamHandle new_pool_tag();
  void open_pool(StreamHandle stream, StreamHandle tag);
  void close_pool(StreamHandle stream);
  void retire_pool(StreamHandle tag);

 private:
  struct Block {
    size_t size;
    StreamHandle stream;
  };
  void release_cached_locked();
  // Frees the cached blocks whose free-list key (stream or pool tag) `which` accepts.
  void release_free_locked(const std::function<bool(StreamHandle)>& which);

  std::unique_ptr<RawMemory> backend_;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> in_use_;
  std::map<std::pair<StreamHandle, size_t>, std::vector<void*>> free_;  // (stream or tag, size)
  std::map<StreamHandle, StreamHandle> open_pools_;                     // stream -> pool tag
  std::vector<StreamHandle> retired_;
  AllocatorStats stats_;
};

void* cpu_aligned_alloc(size_t bytes);  // 64-byte aligned; throws std::bad_alloc
void cpu_aligned_free(void* p);
// What CPU tensors hold (the blocks of cpu_aligned_alloc, as malloc sized them): current_bytes
// and peak_bytes only, counted with two atomics per allocation; the CPU twin of the CUDA
// allocator's max_memory_allocated (--log-device-stats), unaffected by what malloc keeps.
AllocatorStats cpu_tensor_stats();
void reset_cpu_tensor_peak();

// The process-wide CUDA caching allocator of a device, and the pinned-host allocator.
// Both throw a clear error when CUDA is unavailable.
CachingAllocator& cuda_allocator(int device);
CachingAllocator& pinned_allocator();

}  // namespace mlai::tensor
