// Check macros for every CUDA library call (runtime, cuBLAS, cuDNN, NCCL) and kernel launch:
// a failure throws std::runtime_error naming the call, file, line and the library's message.
// Used only by .cu and *_cuda.cpp files; cudnn.h / nccl.h are needed only where those macros are.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace mlai::kernels::detail {

[[noreturn]] inline void throw_call_error(const char* library, const char* call, const char* file,
                                          int line, int code, const char* message) {
  throw std::runtime_error(std::string(library) + " error " + std::to_string(code) + " (" +
                           (message != nullptr ? message : "unknown error") + ") in " + call +
                           " at " + file + ":" + std::to_string(line));
}

// Makes `device` current for a scope and restores the previous device (runtime calls that
// create or free per-device objects must run with the right current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    if (prev_ != device) {
      const cudaError_t err = cudaSetDevice(device);
      if (err != cudaSuccess)
        throw_call_error("CUDA", "cudaSetDevice", __FILE__, __LINE__, static_cast<int>(err),
                         cudaGetErrorString(err));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_ && prev_ >= 0) (void)cudaSetDevice(prev_);  // best effort: never throw here
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool changed_ = false;
};

}  // namespace mlai::kernels::detail

#define MLAI_CHECK_STATUS_(LIBRARY, CALL, OK, TO_STRING)                            \
  do {                                                                              \
    const auto mlai_status_ = (CALL);                                               \
    if (mlai_status_ != (OK))                                                       \
      ::mlai::kernels::detail::throw_call_error(LIBRARY, #CALL, __FILE__, __LINE__, \
                                                static_cast<int>(mlai_status_),     \
                                                TO_STRING(mlai_status_));           \
  } while (0)

#define MLAI_CUDA_CHECK(call) MLAI_CHECK_STATUS_("CUDA", call, cudaSuccess, cudaGetErrorString)
#define MLAI_CUBLAS_CHECK(call) \
  MLAI_CHECK_STATUS_("cuBLAS", call, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)
// The two below expand to cudnnGetErrorString / ncclGetErrorString at the point of use, so only
// files that call cuDNN or NCCL (and so include cudnn.h / nccl.h) need those headers.
#define MLAI_CUDNN_CHECK(call) \
  MLAI_CHECK_STATUS_("cuDNN", call, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
#define MLAI_NCCL_CHECK(call) MLAI_CHECK_STATUS_("NCCL", call, ncclSuccess, ncclGetErrorString)

// After every kernel launch: a bad configuration shows up at once; with MLAI_DEBUG_SYNC (Debug
// builds) the device is synchronized too, so a fault is reported at the kernel that caused it.
#define MLAI_LAUNCH_CHECK_CALL_(CALL, WHAT)                                       \
  do {                                                                            \
    const cudaError_t mlai_err_ = (CALL);                                         \
    if (mlai_err_ != cudaSuccess)                                                 \
      ::mlai::kernels::detail::throw_call_error("CUDA", WHAT, __FILE__, __LINE__, \
                                                static_cast<int>(mlai_err_),      \
                                                cudaGetErrorString(mlai_err_));   \
  } while (0)
#ifdef MLAI_DEBUG_SYNC
#define MLAI_LAUNCH_CHECK()                                                                 \
  do {                                                                                      \
    MLAI_LAUNCH_CHECK_CALL_(cudaGetLastError(), "kernel launch");                           \
    MLAI_LAUNCH_CHECK_CALL_(cudaDeviceSynchronize(), "kernel execution (MLAI_DEBUG_SYNC)"); \
  } while (0)
#else
#define MLAI_LAUNCH_CHECK() MLAI_LAUNCH_CHECK_CALL_(cudaGetLastError(), "kernel launch")
#endif
