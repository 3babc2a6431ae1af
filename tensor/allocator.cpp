// The caching allocator's bookkeeping (backend-independent), the aligned CPU allocator, and the
// process-wide CUDA device and pinned-host allocators.
#include "tensor/allocator.h"

#include <malloc.h>  // malloc_usable_size (glibc)

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef MLAI_WITH_CUDA
#include "tensor/cuda_backend.h"
#endif
#include "tensor/device.h"

namespace mlai::tensor {

CachingAllocator::CachingAllocator(std::unique_ptr<RawMemory> backend)
    : backend_(std::move(backend)) {}

CachingAllocator::~CachingAllocator() {
  // Blocks still in use belong to tensors that outlive the allocator (static destruction
  // order); leave them to process exit rather than free memory under them.
  release_cached_locked();
}

size_t CachingAllocator::round_size(size_t bytes) {
  constexpr size_t kSmallStep = 512, kLargeStep = 2u << 20, kSmallLimit = 1u << 20;
  if (bytes == 0) bytes = 1;
  const size_t step = bytes < kSmallLimit ? kSmallStep : kLargeStep;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes, StreamHandle stream) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto pool = open_pools_.find(stream); pool != open_pools_.end()) stream = pool->second;
  ++stats_.allocs;
  void* p = nullptr;
  // Best fit among this stream's cached blocks, wasting at most a quarter of the block.
  auto it = free_.lower_bound({stream, size});
  if (it != free_.end() && it->first.first == stream &&
      it->first.second - size <= it->first.second / 4) {
    p = it->second.back();
    it->second.pop_back();
    const size_t got = it->first.second;
    if (it->second.empty()) free_.erase(it);
    ++stats_.cache_hits;
    in_use_[p] = {got, stream};
    stats_.current_bytes += static_cast<int64_t>(got);
  } else {
    p = backend_->raw_alloc(size);
    // Out of memory: give the cache back and try once more, except while a graph is being
    // captured (cudaFree is not allowed then; the error below says so instead).
    if (p == nullptr && open_pools_.empty()) {
      release_cached_locked();
      p = backend_->raw_alloc(size);
    }
    if (p == nullptr)
      throw std::runtime_error(std::string(backend_->name()) + ": out of memory allocating " +
                               std::to_string(size) + " bytes (in use " +
                               std::to_string(stats_.current_bytes) + ", peak " +
                               std::to_string(stats_.peak_bytes) + ")" +
                               (open_pools_.empty() ? "" : " while capturing a CUDA graph"));
    ++stats_.raw_allocs;
    stats_.reserved_bytes += static_cast<int64_t>(size);
    in_use_[p] = {size, stream};
    stats_.current_bytes += static_cast<int64_t>(size);
  }
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_use_.find(p);
  if (it == in_use_.end()) throw std::logic_error("CachingAllocator: free of an unknown pointer");
  const Block b = it->second;
  in_use_.erase(it);
  stats_.current_bytes -= static_cast<int64_t>(b.size);
  if (std::find(retired_.begin(), retired_.end(), b.stream) != retired_.end()) {
    backend_->raw_free(p);  // its graph is gone: nothing can use the block again
    ++stats_.raw_frees;
    stats_.reserved_bytes -= static_cast<int64_t>(b.size);
    return;
  }
  free_[{b.stream, b.size}].push_back(p);
}

StreamHandle CachingAllocator::new_pool_tag() {
  static std::atomic<uintptr_t> next{1};
  return reinterpret_cast<StreamHandle>(next.fetch_add(2));  // odd: never an object's address
}

void CachingAllocator::open_pool(StreamHandle stream, StreamHandle tag) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_pools_.emplace(stream, tag).second)
    throw std::logic_error("CachingAllocator: a pool is already open on this stream");
}

void CachingAllocator::close_pool(StreamHandle stream) {
  std::lock_guard<std::mutex> lock(mu_);
  open_pools_.erase(stream);
}

void CachingAllocator::retire_pool(StreamHandle tag) {
  std::lock_guard<std::mutex> lock(mu_);
  release_free_locked([tag](StreamHandle key) { return key == tag; });
  retired_.push_back(tag);
}

void CachingAllocator::release_cached_locked() {
  // A pool's blocks (odd tags) are a live graph's memory, cached or not: only retire_pool
  // frees them.
  release_free_locked(
      [](StreamHandle key) { return (reinterpret_cast<uintptr_t>(key) & 1u) == 0; });
}

void CachingAllocator::release_free_locked(const std::function<bool(StreamHandle)>& which) {
  for (auto it = free_.begin(); it != free_.end();) {
    if (!which(it->first.first)) {
      ++it;
      continue;
    }
    for (void* p : it->second) {
      backend_->raw_free(p);
      ++stats_.raw_frees;
      stats_.reserved_bytes -= static_cast<int64_t>(it->first.second);
    }
    it = free_.erase(it);
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

namespace {
std::atomic<int64_t> g_cpu_current{0}, g_cpu_peak{0};

void raise_cpu_peak(int64_t now) {
  int64_t peak = g_cpu_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_cpu_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* cpu_aligned_alloc(size_t bytes) {
  constexpr size_t kAlign = 64;
  const size_t size = (bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, size == 0 ? kAlign : size);
  if (p == nullptr) throw std::bad_alloc();
  const auto n = static_cast<int64_t>(malloc_usable_size(p));
  raise_cpu_peak(g_cpu_current.fetch_add(n, std::memory_order_relaxed) + n);
  return p;
}

void cpu_aligned_free(void* p) {
  if (p == nullptr) return;
  g_cpu_current.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}

AllocatorStats cpu_tensor_stats() {
  AllocatorStats s;
  s.current_bytes = g_cpu_current.load(std::memory_order_relaxed);
  s.peak_bytes = std::max(g_cpu_peak.load(std::memory_order_relaxed), s.current_bytes);
  return s;
}

void reset_cpu_tensor_peak() {
  g_cpu_peak.store(g_cpu_current.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

CachingAllocator& cuda_allocator(int device) {
  check_device(Device::cuda(device));
#ifdef MLAI_WITH_CUDA
  // One allocator per device, created on first use and kept for the whole process (never
  // destroyed: CUDA may be torn down before static destructors run).
  static std::mutex mu;
  static std::vector<CachingAllocator*> per_device(static_cast<size_t>(cuda_device_count()));
  std::lock_guard<std::mutex> lock(mu);
  auto& a = per_device[static_cast<size_t>(device)];
  if (a == nullptr) a = new CachingAllocator(cuda_backend::device_memory(device));
  return *a;
#else
  throw std::logic_error("unreachable: check_device passed without CUDA");
#endif
}

CachingAllocator& pinned_allocator() {
  if (!cuda_available())
    throw std::runtime_error("pinned host memory needs CUDA: " + cuda_unavailable_reason());
#ifdef MLAI_WITH_CUDA
  static CachingAllocator* a = new CachingAllocator(cuda_backend::pinned_memory());
  return *a;
#else
  throw std::logic_error("unreachable: CUDA available without CUDA support");
#endif
}

}  // namespace mlai::tensor
