// CUDA twins of kernels/fill.cpp: constant fill (16-byte stores) and the counter-based uniform
// and normal generators of fill.h. The double-precision formulas use unfused operations so each
// element rounds exactly as on the CPU: the GPU and the CPU draw the same numbers.
#include "kernels/cuda_types.cuh"
#include "kernels/fill.h"

namespace mlai::kernels::cuda {

namespace {

template <class T>
__global__ void fill_kernel(T* out, int64_t n, T value, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t tail = 0;
  if (vec) {
    using P = dev::Pack<T>;
    P pack;
#pragma unroll
    for (int j = 0; j < P::kN; ++j) pack.v[j] = value;
    for (int64_t p = tid; p < n / P::kN; p += stride) reinterpret_cast<P*>(out)[p] = pack;
    tail = n / P::kN * P::kN;
  }
  for (int64_t i = tail + tid; i < n; i += stride) out[i] = value;
}

template <class T>
__global__ void uniform_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo,
                               double span) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double u = uniform01(seed, offset + static_cast<uint64_t>(i));
    out[i] = dev::from_acc<T>(__dadd_rn(lo, __dmul_rn(span, u)));
  }
}

template <class T>
__global__ void normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean,
                              double stddev) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const uint64_t c = 2 * (offset + static_cast<uint64_t>(i));
    const double u1 = uniform01(seed, c);
    const double u2 = uniform01(seed, c + 1);
    const double r = sqrt(__dmul_rn(-2.0, log(__dadd_rn(1.0, -u1))));
    const double z = __dmul_rn(r, cos(__dmul_rn(kTwoPi, u2)));
    out[i] = dev::from_acc<T>(__dadd_rn(mean, __dmul_rn(stddev, z)));
  }
}

}  // namespace

template <class T>
void fill(T* out, int64_t n, double value, StreamHandle stream) {
  if (n <= 0) return;
  const T v = from_acc<T>(value);  // the host's rounding, shared with the CPU twin
  const bool vec = dev::aligned16(out);
  const int64_t work = vec ? (n + dev::Pack<T>::kN - 1) / dev::Pack<T>::kN : n;
  fill_kernel<T><<<dev::grid_size(work), dev::kBlock, 0, stream>>>(out, n, v, vec);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi,
             StreamHandle stream) {
  if (n <= 0) return;
  uniform_kernel<T>
      <<<dev::grid_size(n), dev::kBlock, 0, stream>>>(out, n, seed, offset, lo, hi - lo);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double stddev,
            StreamHandle stream) {
  if (n <= 0) return;
  normal_kernel<T>
      <<<dev::grid_size(n), dev::kBlock, 0, stream>>>(out, n, seed, offset, mean, stddev);
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                \
  template void fill<T>(T*, int64_t, double, StreamHandle);                                \
  template void uniform<T>(T*, int64_t, uint64_t, uint64_t, double, double, StreamHandle); \
  template void normal<T>(T*, int64_t, uint64_t, uint64_t, double, double, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
MLAI_INSTANTIATE(int32_t)
MLAI_INSTANTIATE(int64_t)
MLAI_INSTANTIATE(uint8_t)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
