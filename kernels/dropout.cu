// CUDA dropout: one thread per element (grid-stride), the shared counter-based generator.
#include "kernels/cuda_types.cuh"
#include "kernels/dropout.h"
#include "kernels/fill.h"

namespace mlai::kernels::cuda {

namespace {
template <class T>
__global__ void dropout_forward_kernel(const T* x, T* y, uint8_t* mask, int64_t n, double p,
                                       uint64_t seed, uint64_t offset, acc_t<T> scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool keep = uniform01(seed, offset + static_cast<uint64_t>(i)) >= p;
    mask[i] = keep;
    y[i] = dev::from_acc<T>(keep ? dev::to_acc(x[i]) * scale : acc_t<T>(0));
  }
}

template <class T>
__global__ void dropout_backward_kernel(const T* dy, const uint8_t* mask, T* dx, int64_t n,
                                        acc_t<T> scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] = dev::from_acc<T>(mask[i] ? dev::to_acc(dy[i]) * scale : acc_t<T>(0));
}
}  // namespace

template <class T>
void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed,
                     uint64_t offset, StreamHandle stream) {
  if (n == 0) return;
  dropout_forward_kernel<T><<<dev::grid_size(n), dev::kBlock, 0, stream>>>(
      x, y, mask, n, p, seed, offset, static_cast<acc_t<T>>(1.0 / (1.0 - p)));
  MLAI_LAUNCH_CHECK();
}

template <class T>
void dropout_backward(const T* dy, const uint8_t* mask, T* dx, int64_t n, double scale,
                      StreamHandle stream) {
  if (n == 0) return;
  dropout_backward_kernel<T><<<dev::grid_size(n), dev::kBlock, 0, stream>>>(
      dy, mask, dx, n, static_cast<acc_t<T>>(scale));
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                 \
  template void dropout_forward<T>(const T*, T*, uint8_t*, int64_t, double, uint64_t,       \
                                   uint64_t, StreamHandle);                                 \
  template void dropout_backward<T>(const T*, const uint8_t*, T*, int64_t, double, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
