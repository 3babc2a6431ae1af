// CUDA confusion-matrix update: integer atomics (exact and order-independent).
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
}  // namespace

void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n, int64_t classes,
                      int64_t* confusion, StreamHandle stream) {
  if (n == 0) return;
  confusion_kernel<<<dev::grid_size(n), dev::kBlock, 0, stream>>>(
      predicted, target, n, classes, reinterpret_cast<unsigned long long*>(confusion));
  MLAI_LAUNCH_CHECK();
}

}  // namespace mlai::kernels::cuda
