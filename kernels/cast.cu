// CUDA twin of kernels/cast.cpp: every pair of the seven dtypes, element for element the same
// result as the CPU (which goes through double): conversions that are exact in float skip
// double, and those that are not (from double, from int64) keep the CPU's two roundings.
#include <type_traits>

#include "kernels/cast.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {

template <class T>
constexpr bool kIsReduced = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;
template <class T>
constexpr bool kIsInt = std::is_integral_v<T>;

template <class Src>
__device__ __forceinline__ auto widen(Src v) {  // to float or double, exactly
  if constexpr (kIsReduced<Src>) {
    return dev::to_acc(v);
  } else {
    return v;
  }
}

template <class Src, class Dst>
__device__ __forceinline__ Dst convert(Src v) {
  if constexpr (std::is_same_v<Src, Dst>) {
    return v;
  } else if constexpr (kIsInt<Src> && kIsInt<Dst>) {
    return static_cast<Dst>(v);  // the CPU also converts int64 -> int32 directly
  } else if constexpr (std::is_same_v<Dst, double>) {
    return static_cast<double>(widen(v));
  } else if constexpr (std::is_same_v<Dst, float> || kIsReduced<Dst>) {
    // int64 -> float rounds twice on the CPU (int64 -> double -> float): keep that.
    if constexpr (std::is_same_v<Src, int64_t>) {
      return dev::from_acc<Dst>(static_cast<double>(v));
    } else if constexpr (std::is_same_v<Src, double>) {
      return dev::from_acc<Dst>(v);
    } else {  // float, half, bf16, int32, uint8: exact in double, so one rounding from float
      return dev::from_acc<Dst>(static_cast<float>(widen(v)));
    }
  } else {  // floating -> integer: truncation toward zero
    return static_cast<Dst>(widen(v));
  }
}

template <class Src, class Dst>
__global__ void cast_kernel(const Src* in, Dst* out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = convert<Src, Dst>(in[i]);
}

template <class Src, class Dst>
__global__ void scale_cast_kernel(const Src* in, Dst* out, int64_t n, float alpha) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = dev::from_acc<Dst>(__fmul_rn(dev::to_acc(in[i]), alpha));  // (no fma: the CPU's bits)
}

}  // namespace

template <class Src, class Dst>
void scale_cast(const Src* in, Dst* out, int64_t n, float alpha, StreamHandle stream) {
  if (n <= 0) return;
  scale_cast_kernel<Src, Dst><<<dev::grid_size(n), dev::kBlock, 0, stream>>>(in, out, n, alpha);
  MLAI_LAUNCH_CHECK();
}
template void scale_cast<float, Half>(const float*, Half*, int64_t, float, StreamHandle);
template void scale_cast<float, BFloat16>(const float*, BFloat16*, int64_t, float, StreamHandle);
template void scale_cast<Half, float>(const Half*, float*, int64_t, float, StreamHandle);
template void scale_cast<BFloat16, float>(const BFloat16*, float*, int64_t, float, StreamHandle);

template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n, StreamHandle stream) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<Src, Dst>) {
    MLAI_CUDA_CHECK(cudaMemcpyAsync(out, in, static_cast<size_t>(n) * sizeof(Src),
                                    cudaMemcpyDeviceToDevice, stream));
  } else {
    cast_kernel<Src, Dst><<<dev::grid_size(n), dev::kBlock, 0, stream>>>(in, out, n);
    MLAI_LAUNCH_CHECK();
  }
}

#define MLAI_CAST_TO(S)                                                        \
  template void cast<S, float>(const S*, float*, int64_t, StreamHandle);       \
  template void cast<S, double>(const S*, double*, int64_t, StreamHandle);     \
  template void cast<S, Half>(const S*, Half*, int64_t, StreamHandle);         \
  template void cast<S, BFloat16>(const S*, BFloat16*, int64_t, StreamHandle); \
  template void cast<S, int32_t>(const S*, int32_t*, int64_t, StreamHandle);   \
  template void cast<S, int64_t>(const S*, int64_t*, int64_t, StreamHandle);   \
  template void cast<S, uint8_t>(const S*, uint8_t*, int64_t, StreamHandle);
MLAI_CAST_TO(float)
MLAI_CAST_TO(double)
MLAI_CAST_TO(Half)
MLAI_CAST_TO(BFloat16)
MLAI_CAST_TO(int32_t)
MLAI_CAST_TO(int64_t)
MLAI_CAST_TO(uint8_t)
#undef MLAI_CAST_TO

}  // namespace mlai::kernels::cuda
