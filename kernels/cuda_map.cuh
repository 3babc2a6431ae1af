// The elementwise map of the CUDA kernels (kernels/elementwise.cu, kernels/transformer.cu):
// out[i] = op(in0[i] [, in1[i]]) by one grid-stride kernel over 16-byte packs when every
// pointer is 16-byte aligned, then a scalar tail. Ops take and return storage values (T) and
// do their maths in acc_t<T> inside. Include from .cu files only.
#pragma once

#include "kernels/cuda_check.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

template <class T, int kArity, class Op>
__device__ __forceinline__ T apply(const Op& op, T a, T b) {
  if constexpr (kArity == 1) {
    return op(a);
  } else {
    return op(a, b);
  }
}

// out[i] = op(in0[i] [, in1[i]]). out may alias an input (axpy writes y in place).
template <class T, int kArity, class Op>
__global__ void map_kernel(T* out, const T* in0, const T* in1, int64_t n, bool vec, Op op) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t tail = 0;
  if (vec) {
    using P = dev::Pack<T>;
    const int64_t packs = n / P::kN;
    for (int64_t p = tid; p < packs; p += stride) {
      const P a = reinterpret_cast<const P*>(in0)[p];
      P b;
      if constexpr (kArity == 2) b = reinterpret_cast<const P*>(in1)[p];
      P r;
#pragma unroll
      for (int j = 0; j < P::kN; ++j) r.v[j] = apply<T, kArity>(op, a.v[j], b.v[j]);
      reinterpret_cast<P*>(out)[p] = r;
    }
    tail = packs * P::kN;
  }
  for (int64_t i = tail + tid; i < n; i += stride)
    out[i] = apply<T, kArity>(op, in0[i], kArity == 2 ? in1[i] : in0[i]);
}

template <class T, int kArity, class Op>
void launch_map(T* out, const T* in0, const T* in1, int64_t n, Op op, StreamHandle stream) {
  if (n <= 0) return;
  const bool vec =
      dev::aligned16(out) && dev::aligned16(in0) && (kArity == 1 || dev::aligned16(in1));
  const int64_t work = vec ? (n + dev::Pack<T>::kN - 1) / dev::Pack<T>::kN : n;
  map_kernel<T, kArity, Op>
      <<<dev::grid_size(work), dev::kBlock, 0, stream>>>(out, in0, in1, n, vec, op);
  MLAI_LAUNCH_CHECK();
}

}  // namespace mlai::kernels::cuda
