// Dtype casts between every pair of float32, float64, float16, bfloat16, int32, int64, uint8.
// Float -> half/bf16 rounds to nearest even; float -> integer truncates toward zero (as C++).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

namespace cpu {
template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n);
}  // namespace cpu

namespace cuda {
template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
