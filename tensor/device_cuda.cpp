// CUDA runtime wrappers for devices and copies (declared in tensor/cuda_backend.h). The device
// probe never throws: a machine without a driver or GPU just reports zero devices and why.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "tensor/cuda_backend.h"

namespace mlai::tensor::cuda_backend {

int device_count(std::string* reason) {
  try {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      if (reason != nullptr)
        *reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
      (void)cudaGetLastError();  // do not leave the error for the next checked call
      return 0;
    }
    if (n == 0 && reason != nullptr) *reason = "no CUDA device found";
    return n;
  } catch (const std::exception& e) {  // e.g. std::bad_alloc building the message
    if (reason != nullptr) *reason = e.what();
    return 0;
  } catch (...) {
    return 0;
  }
}

void set_device(int device) { MLAI_CUDA_CHECK(cudaSetDevice(device)); }

std::string device_name(int device) {
  cudaDeviceProp prop{};
  MLAI_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.name;
}

int current_device() {
  int d = 0;
  MLAI_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void memcpy(void* dst, bool dst_cuda, const void* src, bool src_cuda, size_t bytes,
            StreamHandle stream, bool async) {
  if (bytes == 0) return;
  const cudaMemcpyKind kind = dst_cuda
                                  ? (src_cuda ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                  : (src_cuda ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  MLAI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  if (!async) MLAI_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace mlai::tensor::cuda_backend
