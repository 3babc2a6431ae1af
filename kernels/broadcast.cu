// CUDA broadcast along one axis (backward of sum/mean): one thread per output element,
// grid-stride, the product in double as on the CPU.
#include "kernels/broadcast.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {
template <class T>
__global__ void broadcast_dim_kernel(const T* g, T* out, int64_t total, int64_t dim,
                                     int64_t inner, double scale) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % inner;
    const int64_t o = idx / (inner * dim);
    // In double, rounded once: the CPU twin's arithmetic (a float scale like 1/dim would round
    // twice).
    out[idx] = dev::from_acc<T>(scale * static_cast<double>(dev::to_acc(g[o * inner + i])));
  }
}
}  // namespace

template <class T>
void broadcast_dim(const T* g, T* out, int64_t outer, int64_t dim, int64_t inner, double scale,
                   StreamHandle stream) {
  const int64_t total = outer * dim * inner;
  if (total == 0) return;
  broadcast_dim_kernel<T><<<dev::grid_size(total), dev::kBlock, 0, stream>>>(
      g, out, total, dim, inner, scale);
  MLAI_LAUNCH_CHECK();
}

template void broadcast_dim<float>(const float*, float*, int64_t, int64_t, int64_t, double,
                                   StreamHandle);
template void broadcast_dim<double>(const double*, double*, int64_t, int64_t, int64_t, double,
                                    StreamHandle);
template void broadcast_dim<Half>(const Half*, Half*, int64_t, int64_t, int64_t, double,
                                  StreamHandle);
template void broadcast_dim<BFloat16>(const BFloat16*, BFloat16*, int64_t, int64_t, int64_t,
                                      double, StreamHandle);

}  // namespace mlai::kernels::cuda
