// CUDA confusion-matrix update and top-k hits: integer atomics (exact and order-independent).
#include "kernels/cuda_types.cuh"
#include "kernels/metrics.h"

namespace mlai::kernels::cuda {

namespace {
__global__ void confusion_kernel(const int64_t* predicted, const int64_t* target, int64_t n,
                                 int64_t classes, unsigned long long* confusion) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = target[i], p = predicted[i];
    if (t >= 0 && t < classes && p >= 0 && p < classes) atomicAdd(&confusion[t * classes + p], 1ull);
  }
}
// A warp per sample: its lanes count the classes that rank above the target (argmax's order).
template <class T>
__global__ void topk_hits_kernel(const T* logits, const int64_t* target, int64_t n,
                                 int64_t classes, int64_t k, unsigned long long* hits) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5; r < n;
       r += warps) {
    const int64_t t = target[r];  // the same in every lane: the branch is uniform
    if (t < 0 || t >= classes) continue;
    const T* row = logits + r * classes;
    const auto tv = dev::to_acc(row[t]);
    int above = 0;
    for (int64_t d = lane; d < classes; d += 32)
      above += d != t && dev::beats(dev::to_acc(row[d]), d, tv, t);
    above = dev::warp_sum(above);
    if (lane == 0 && above < k) atomicAdd(hits, 1ull);
  }
}

}  // namespace

template <class T>
void topk_hits(const T* logits, const int64_t* target, int64_t n, int64_t classes, int64_t k,
               int64_t* hits, StreamHandle stream) {
  if (n == 0) return;
  topk_hits_kernel<T><<<dev::grid_size(n * 32), dev::kBlock, 0, stream>>>(
      logits, target, n, classes, k, reinterpret_cast<unsigned long long*>(hits));
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                   \
  template void topk_hits<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, int64_t*, \
                             StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n, int64_t classes,
                      int64_t* confusion, StreamHandle stream) {
  if (n == 0) return;
  confusion_kernel<<<dev::grid_size(n), dev::kBlock, 0, stream>>>(
      predicted, target, n, classes, reinterpret_cast<unsigned long long*>(confusion));
  MLAI_LAUNCH_CHECK();
}

}  // namespace mlai::kernels::cuda
