// Internal to kernels/: the cuBLAS data type of each storage type, and the fp32-accumulating
// compute type for it (gemm.cu, gemm_lt.cu).
#pragma once

#include <cublas_api.h>
#include <library_types.h>

#include <type_traits>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace mlai::kernels::cuda {

template <class T>
constexpr cudaDataType_t cublas_data_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else if constexpr (std::is_same_v<T, double>) {
    return CUDA_R_64F;
  } else if constexpr (std::is_same_v<T, Half>) {
    return CUDA_R_16F;
  } else {
    static_assert(std::is_same_v<T, BFloat16>, "cuBLAS: unsupported type");
    return CUDA_R_16BF;
  }
}

// Float32 data: as float32_matmul_precision() allows (TF32 or bf16 products on tensor cores);
// half and bfloat16 use tensor cores anyway.
template <class T>
cublasComputeType_t compute_type_32() {
  if constexpr (std::is_same_v<T, float>) {
    switch (float32_matmul_precision()) {
      case MatmulPrecision::kHigh:
        return CUBLAS_COMPUTE_32F_FAST_TF32;
      case MatmulPrecision::kMedium:
        return CUBLAS_COMPUTE_32F_FAST_16BF;
      default:
        break;
    }
  }
  return CUBLAS_COMPUTE_32F;
}

}  // namespace mlai::kernels::cuda
