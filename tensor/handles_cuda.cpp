// cuBLAS, cuBLASLt and cuDNN handles: one of each per device, made on first use under a lock and
// kept for the life of the process (never destroyed: the CUDA runtime may be gone by static
// destruction time). A handle is bound to its device, not to a stream: callers set the stream.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include <mutex>
#include <vector>

#include "kernels/cuda_check.h"
#include "tensor/device.h"
#include "tensor/handles.h"

namespace mlai::tensor {

namespace {
template <class Handle, class Create>
Handle per_device(int device, Create create) {
  check_device(Device::cuda(device));
  static std::mutex mu;
  static std::vector<Handle> handles(static_cast<size_t>(cuda_device_count()), nullptr);
  std::lock_guard<std::mutex> lock(mu);
  Handle& h = handles[static_cast<size_t>(device)];
  if (h == nullptr) {
    kernels::detail::DeviceGuard guard(device);
    h = create();
  }
  return h;
}
}  // namespace

kernels::CublasHandle cublas_handle(int device) {
  return per_device<cublasHandle_t>(device, [] {
    cublasHandle_t h = nullptr;
    MLAI_CUBLAS_CHECK(cublasCreate(&h));
    return h;
  });
}

kernels::cuda::CublasWorkspace cublas_workspace(int device) {
  // Kept for the process, like the handle; GEMMs run on the training stream, one at a time.
  constexpr size_t kBytes = size_t{32} << 20;
  void* p = per_device<void*>(device, [] {
    void* ws = nullptr;
    MLAI_CUDA_CHECK(cudaMalloc(&ws, kBytes));
    return ws;
  });
  return {p, kBytes};
}

kernels::CublasLtHandle cublaslt_handle(int device) {
  return per_device<cublasLtHandle_t>(device, [] {
    cublasLtHandle_t h = nullptr;
    MLAI_CUBLAS_CHECK(cublasLtCreate(&h));
    return h;
  });
}

CudnnHandle cudnn_handle(int device) {
  return per_device<cudnnHandle_t>(device, [] {
    cudnnHandle_t h = nullptr;
    MLAI_CUDNN_CHECK(cudnnCreate(&h));
    return h;
  });
}

}  // namespace mlai::tensor
