// CUDA twins of kernels/softmax_xent.cpp. Forward: one warp per row (max, then sum of exp and
// sum of logits, combined with shuffles in a fixed order); backward: one thread per logit.
// Maths in acc_t<T>; the upstream gradient is read on the device, so nothing syncs the host.
#include "kernels/cuda_types.cuh"
#include "kernels/softmax_xent.h"

namespace mlai::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = dev::kBlock / 32;

template <class T>
__global__ void xent_forward_kernel(const T* logits, const int64_t* labels, int64_t rows,
                                    int64_t classes, acc_t<T> eps, const acc_t<T>* weights,
                                    acc_t<T>* loss_rows, acc_t<T>* lse_rows,
                                    acc_t<T>* weight_rows) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5); r < rows;
       r += warps) {
    const T* z = logits + r * classes;
    A mx = -INFINITY;
    for (int64_t c = lane; c < classes; c += 32) mx = dev::fmax_acc(mx, dev::to_acc(z[c]));
    mx = dev::warp_max(mx);
    A se = 0, sz = 0, sw = 0, swz = 0;
    for (int64_t c = lane; c < classes; c += 32) {
      const A v = dev::to_acc(z[c]);
      se += dev::exp_acc(v - mx);
      sz += v;
      if (weights) {
        sw += weights[c];
        swz += weights[c] * v;
      }
    }
    se = dev::warp_sum(se);
    sz = dev::warp_sum(sz);
    if (weights) {
      sw = dev::warp_sum(sw);
      swz = dev::warp_sum(swz);
    }
    if (lane == 0) {
      const A lse = mx + dev::log_acc(se);
      const int64_t y = labels[r];
      // An out-of-range label gives a nan loss rather than a read outside the row.
      const bool valid = y >= 0 && y < classes;
      const A zy = valid ? dev::to_acc(z[y]) : A(NAN);
      if (weights) {
        const A wy = valid ? weights[y] : A(NAN);
        loss_rows[r] =
            (1 - eps) * wy * (lse - zy) + eps / static_cast<A>(classes) * (lse * sw - swz);
        weight_rows[r] = wy;
      } else {
        loss_rows[r] = lse - (1 - eps) * zy - eps * sz / static_cast<A>(classes);
      }
      lse_rows[r] = lse;
    }
  }
}

template <class T>
__global__ void xent_backward_kernel(const T* logits, const int64_t* labels,
                                     const acc_t<T>* lse_rows, const acc_t<T>* dloss,
                                     acc_t<T> scale, int64_t rows, int64_t classes, acc_t<T> eps,
                                     const acc_t<T>* weights, acc_t<T> weight_sum, T* dlogits) {
  using A = acc_t<T>;
  const A g = dloss[0] * scale;
  const A off = eps / static_cast<A>(classes);
  const int64_t n = rows * classes;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    const int64_t r = k / classes, c = k - r * classes;
    const int64_t y = labels[r];
    const A wy = !weights ? A(1) : y >= 0 && y < classes ? weights[y] : A(NAN);
    const A p_scale = weights ? (1 - eps) * wy + off * weight_sum : A(1);
    const A p = dev::exp_acc(dev::to_acc(logits[k]) - lse_rows[r]);
    const A target = off * (weights ? weights[c] : A(1)) + (c == y ? (1 - eps) * wy : A(0));
    dlogits[k] = dev::from_acc<T>(g * (p * p_scale - target));
  }
}

}  // namespace

template <class T>
void softmax_xent_forward(const T* logits, const int64_t* labels, int64_t rows, int64_t classes,
                          double label_smoothing, const acc_t<T>* weights, acc_t<T>* loss_rows,
                          acc_t<T>* lse_rows, acc_t<T>* weight_rows, StreamHandle stream) {
  if (rows <= 0) return;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  xent_forward_kernel<T><<<dev::grid_size(blocks, 1), dev::kBlock, 0, stream>>>(
      logits, labels, rows, classes, static_cast<acc_t<T>>(label_smoothing), weights, loss_rows,
      lse_rows, weight_rows);
  MLAI_LAUNCH_CHECK();
}

template <class T>
void softmax_xent_backward(const T* logits, const int64_t* labels, const acc_t<T>* lse_rows,
                           const acc_t<T>* dloss, double scale, int64_t rows, int64_t classes,
                           double label_smoothing, const acc_t<T>* weights, double weight_sum,
                           T* dlogits, StreamHandle stream) {
  if (rows * classes <= 0) return;
  xent_backward_kernel<T><<<dev::grid_size(rows * classes), dev::kBlock, 0, stream>>>(
      logits, labels, lse_rows, dloss, static_cast<acc_t<T>>(scale), rows, classes,
      static_cast<acc_t<T>>(label_smoothing), weights, static_cast<acc_t<T>>(weight_sum),
      dlogits);
  MLAI_LAUNCH_CHECK();
}

#define MLAI_INSTANTIATE(T)                                                                     \
  template void softmax_xent_forward<T>(const T*, const int64_t*, int64_t, int64_t, double,     \
                                        const acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*,       \
                                        StreamHandle);                                          \
  template void softmax_xent_backward<T>(const T*, const int64_t*, const acc_t<T>*,             \
                                         const acc_t<T>*, double, int64_t, int64_t, double,     \
                                         const acc_t<T>*, double, T*, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
