// Multi-tensor "unscale and check finite" for mixed precision (PyTorch's
// _amp_foreach_non_finite_check_and_unscale_): every gradient is multiplied by inv_scale in
// place, and found_inf is set to 1 if any element of any tensor is inf or nan. inv_scale and
// found_inf live on the device (host memory for cpu), so the step needs no host sync.
// A few launches cover all tensors: the CUDA version packs up to kMaxTensorsPerLaunch tensors
// into the kernel's parameters.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

constexpr int kMaxTensorsPerLaunch = 48;

namespace cpu {
template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf);
}  // namespace cpu

namespace cuda {
template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
