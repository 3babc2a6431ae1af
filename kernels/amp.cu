// CUDA twin of kernels/amp.cpp: multi-tensor unscale + inf/nan check. Up to kMaxTensorsPerLaunch
// tensors per launch, their pointers and sizes passed by value in the kernel's parameters
// (48 x 16 bytes, well under the 4 KB limit); blockIdx.y picks the tensor, x strides through it.
#include <algorithm>

#include "kernels/amp.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {

template <class T>
struct TensorList {
  T* ptr[kMaxTensorsPerLaunch];
  int64_t size[kMaxTensorsPerLaunch];
};
static_assert(sizeof(TensorList<float>) + 2 * sizeof(void*) <= 4096,
              "kernel parameters must fit in 4 KB");

__device__ __forceinline__ bool finite(float v) {
  return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

template <class T>
__device__ __forceinline__ T unscale_one(T x, float s, bool& bad) {
  const float v = dev::to_acc(x);
  bad |= !finite(v);
  return dev::from_acc<T>(__fmul_rn(v, s));
}

// kWrite false: check only (inv_scale is null), no stores.
template <class T, bool kWrite>
__global__ void unscale_kernel(TensorList<T> list, const float* inv_scale, float* found_inf) {
  T* p = list.ptr[blockIdx.y];
  const int64_t n = list.size[blockIdx.y];
  const float s = kWrite ? *inv_scale : 1.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  bool bad = false;
  int64_t tail = 0;
  if (dev::aligned16(p)) {
    using P = dev::Pack<T>;
    for (int64_t k = tid; k < n / P::kN; k += stride) {
      P v = reinterpret_cast<P*>(p)[k];
#pragma unroll
      for (int j = 0; j < P::kN; ++j) v.v[j] = unscale_one(v.v[j], s, bad);
      if (kWrite) reinterpret_cast<P*>(p)[k] = v;
    }
    tail = n / P::kN * P::kN;
  }
  for (int64_t i = tail + tid; i < n; i += stride) {
    const T v = unscale_one(p[i], s, bad);
    if (kWrite) p[i] = v;
  }
  // Every writer stores the same 1.0f, so the unordered stores are harmless.
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found_inf = 1.0f;
}

// Partial sums of squares: block (x, y) adds its share of tensor y in double and writes one
// value; idle blocks write 0, so every partial the finalize kernel reads is defined.
template <class T>
__global__ void sum_squares_kernel(TensorList<T> list, double* partials) {
  const T* p = list.ptr[blockIdx.y];
  const int64_t n = list.size[blockIdx.y];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double acc = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const double v = dev::to_acc(p[i]);
    acc += v * v;
  }
  acc = dev::block_sum(acc);
  if (threadIdx.x == 0) partials[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = acc;
}

// One block: *sum_sq += the sum of `count` partials, in a fixed order.
__global__ void sum_partials_kernel(const double* partials, int64_t count, float* sum_sq) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = dev::block_sum(acc);
  if (threadIdx.x == 0) *sum_sq = __double2float_rn(static_cast<double>(*sum_sq) + acc);
}

__global__ void update_scale_kernel(float* scale, int32_t* tracker, int64_t* skipped,
                                    float* found_inf, float growth, float backoff,
                                    int32_t interval) {
  if (*found_inf != 0.0f) {
    scale[0] *= backoff;
    *tracker = 0;
    ++*skipped;
  } else if (++*tracker >= interval) {
    const float grown = scale[0] * growth;
    if (finite(grown)) scale[0] = grown;
    *tracker = 0;
  }
  scale[1] = __double2float_rn(1.0 / static_cast<double>(scale[0]));
  *found_inf = 0.0f;
}

__global__ void clip_factor_kernel(const float* sum_sq, const float* inv_scale, float grad_scale,
                                   float max_norm, float* out) {
  const float inv = inv_scale ? *inv_scale : 1.0f;
  const float norm = sqrtf(*sum_sq) * inv * grad_scale;
  out[0] = inv * fminf(1.0f, max_norm / (norm + 1e-6f));
}

}  // namespace

void clip_norm_factor(const float* sum_sq, const float* inv_scale, float grad_scale, float max_norm,
                      float* out, StreamHandle stream) {
  clip_factor_kernel<<<1, 1, 0, stream>>>(sum_sq, inv_scale, grad_scale, max_norm, out);
  MLAI_LAUNCH_CHECK();
}

void update_loss_scale(float* scale, int32_t* growth_tracker, int64_t* skipped, float* found_inf,
                       float growth, float backoff, int32_t interval, StreamHandle stream) {
  update_scale_kernel<<<1, 1, 0, stream>>>(scale, growth_tracker, skipped, found_inf, growth,
                                           backoff, interval);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf, StreamHandle stream) {
  for (int start = 0; start < count; start += kMaxTensorsPerLaunch) {
    const int m = std::min(count - start, kMaxTensorsPerLaunch);
    TensorList<T> list{};
    int64_t largest = 0;
    for (int t = 0; t < m; ++t) {
      list.ptr[t] = tensors[start + t];
      list.size[t] = sizes[start + t];
      largest = std::max(largest, sizes[start + t]);
    }
    if (largest == 0) continue;
    // Enough blocks for the largest tensor, at most 1024 per tensor (grid-stride beyond that).
    const int64_t packs = (largest + dev::Pack<T>::kN - 1) / dev::Pack<T>::kN;
    const unsigned gx = std::min(dev::grid_size(packs), 1024u);
    const dim3 grid(gx, static_cast<unsigned>(m));
    if (inv_scale != nullptr) {
      unscale_kernel<T, true><<<grid, dev::kBlock, 0, stream>>>(list, inv_scale, found_inf);
    } else {
      unscale_kernel<T, false><<<grid, dev::kBlock, 0, stream>>>(list, inv_scale, found_inf);
    }
    MLAI_LAUNCH_CHECK();
  }
}

constexpr unsigned kSumBlocksPerTensor = 64;  // with 256 threads: 16K elements per pass

int64_t sum_squares_partials() { return int64_t{kMaxTensorsPerLaunch} * kSumBlocksPerTensor; }

template <class T>
void sum_squares(const T* const* tensors, const int64_t* sizes, int count, float* sum_sq,
                 double* partials, StreamHandle stream) {
  for (int start = 0; start < count; start += kMaxTensorsPerLaunch) {
    const int m = std::min(count - start, kMaxTensorsPerLaunch);
    TensorList<T> list{};
    int64_t largest = 0;
    for (int t = 0; t < m; ++t) {
      list.ptr[t] = const_cast<T*>(tensors[start + t]);
      list.size[t] = sizes[start + t];
      largest = std::max(largest, sizes[start + t]);
    }
    if (largest == 0) continue;
    const unsigned gx = std::min(dev::grid_size(largest), kSumBlocksPerTensor);
    sum_squares_kernel<T>
        <<<dim3(gx, static_cast<unsigned>(m)), dev::kBlock, 0, stream>>>(list, partials);
    MLAI_LAUNCH_CHECK();
    sum_partials_kernel<<<1, dev::kBlock, 0, stream>>>(partials, int64_t{gx} * m, sum_sq);
    MLAI_LAUNCH_CHECK();
  }
}

// As on the CPU: float, fp16 and bf16 gradients (fp64 training needs no loss scaling).
#define MLAI_INSTANTIATE(T)                                                                   \
  template void unscale_check_finite<T>(T* const*, const int64_t*, int, const float*, float*, \
                                        StreamHandle);                                        \
  template void sum_squares<T>(const T* const*, const int64_t*, int, float*, double*, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
