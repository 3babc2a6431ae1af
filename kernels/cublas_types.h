// Internal to kernels/: the cuBLAS data type of each storage type (gemm.cu, gemm_lt.cu).
#pragma once

#include <library_types.h>

#include <type_traits>

#include "kernels/common.h"

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

}  // namespace mlai::kernels::cuda
