// The raw memory behind the caching allocators (tensor/allocator.h): cudaMalloc/cudaFree on one
// device and cudaHostAlloc/cudaFreeHost for pinned host buffers. Out of memory is reported as
// nullptr (the caching allocator then empties its cache and retries); other errors throw.
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "kernels/cuda_check.h"
#include "tensor/cuda_backend.h"

namespace mlai::tensor::cuda_backend {

namespace {

class DeviceMemory final : public RawMemory {
 public:
  explicit DeviceMemory(int device)
      : device_(device), name_("cuda:" + std::to_string(device) + " device memory") {}
  void* raw_alloc(size_t bytes) override {
    kernels::detail::DeviceGuard guard(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear it: OOM is an answer here, not a failure
      return nullptr;
    }
    if (err != cudaSuccess)
      kernels::detail::throw_call_error("CUDA", "cudaMalloc", __FILE__, __LINE__,
                                        static_cast<int>(err), cudaGetErrorString(err));
    return p;
  }
  void raw_free(void* p) override {
    kernels::detail::DeviceGuard guard(device_);
    MLAI_CUDA_CHECK(cudaFree(p));
  }
  const char* name() const override { return name_.c_str(); }

 private:
  int device_;
  std::string name_;
};

class PinnedMemory final : public RawMemory {
 public:
  void* raw_alloc(size_t bytes) override {
    void* p = nullptr;
    // Portable: page-locked for every device, so any GPU can copy from it asynchronously.
    const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      return nullptr;
    }
    if (err != cudaSuccess)
      kernels::detail::throw_call_error("CUDA", "cudaHostAlloc", __FILE__, __LINE__,
                                        static_cast<int>(err), cudaGetErrorString(err));
    return p;
  }
  void raw_free(void* p) override { MLAI_CUDA_CHECK(cudaFreeHost(p)); }
  const char* name() const override { return "pinned host memory"; }
};

}  // namespace

std::unique_ptr<RawMemory> device_memory(int device) {
  return std::make_unique<DeviceMemory>(device);
}

std::unique_ptr<RawMemory> pinned_memory() { return std::make_unique<PinnedMemory>(); }

}  // namespace mlai::tensor::cuda_backend
