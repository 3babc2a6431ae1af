// Per-device library handles (cuBLAS, cuBLASLt, cuDNN), created once per device and thread-safe to
// fetch.
#pragma once

#include "kernels/gemm.h"

struct cudnnContext;  // cudnnHandle_t is cudnnContext*

namespace mlai::tensor {

using CudnnHandle = cudnnContext*;

kernels::CublasHandle cublas_handle(int device);
// The cuBLAS handle's own 32 MiB workspace (see kernels/gemm.h), made with the handle.
kernels::cuda::CublasWorkspace cublas_workspace(int device);
kernels::CublasLtHandle cublaslt_handle(int device);
CudnnHandle cudnn_handle(int device);

}  // namespace mlai::tensor
