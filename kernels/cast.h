// Dtype casts between every pair of float32, float64, float16, bfloat16, int32, int64, uint8.
// Float -> half/bf16 rounds to nearest even; float -> integer truncates toward zero (as C++).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

// scale_cast: out = in x alpha, multiplied in float and rounded once into Dst; float to
// half/bf16 and back only. It packs data-parallel gradient buckets for the wire and unpacks
// them (--ddp-comm-hook fp16|bf16: PyTorch DDP's fp16_compress_hook / bf16_compress_hook).
namespace cpu {
template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n);
template <class Src, class Dst>
void scale_cast(const Src* in, Dst* out, int64_t n, float alpha);
}  // namespace cpu

namespace cuda {
template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n, StreamHandle stream);
template <class Src, class Dst>
void scale_cast(const Src* in, Dst* out, int64_t n, float alpha, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
