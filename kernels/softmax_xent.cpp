// CPU twin of kernels/softmax_xent.cu: one row at a time, max-subtracted log-sum-exp.
#include "kernels/softmax_xent.h"

#include <cmath>
#include <limits>

namespace mlai::kernels::cpu {

template <class T>
void softmax_xent_forward(const T* logits, const int64_t* labels, int64_t rows, int64_t classes,
                          double label_smoothing, const acc_t<T>* weights, acc_t<T>* loss_rows,
                          acc_t<T>* lse_rows, acc_t<T>* weight_rows) {
  using A = acc_t<T>;
  const A eps = static_cast<A>(label_smoothing);
  const A nan = std::numeric_limits<A>::quiet_NaN();
  for (int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * classes;
    A mx = to_acc(z[0]);
    for (int64_t c = 1; c < classes; ++c) mx = std::fmax(mx, to_acc(z[c]));
    A se = 0, sz = 0, sw = 0, swz = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const A v = to_acc(z[c]);
      se += std::exp(v - mx);
      sz += v;
      if (weights) {
        sw += weights[c];
        swz += weights[c] * v;
      }
    }
    const A lse = mx + std::log(se);
    // A label outside [0, classes) gives a nan loss, as on CUDA (never a read past the row).
    const int64_t y = labels[r];
    const bool valid = y >= 0 && y < classes;
    const A zy = valid ? to_acc(z[y]) : nan;
    if (weights) {
      const A wy = valid ? weights[y] : nan;
      loss_rows[r] = (1 - eps) * wy * (lse - zy) + eps / static_cast<A>(classes) * (lse * sw - swz);
      weight_rows[r] = wy;
    } else {
      // loss = lse - sum_c target_c z_c with target = (1-eps) onehot + eps/C
      loss_rows[r] = lse - (1 - eps) * zy - eps * sz / static_cast<A>(classes);
    }
    lse_rows[r] = lse;
  }
}

template <class T>
void softmax_xent_backward(const T* logits, const int64_t* labels, const acc_t<T>* lse_rows,
                           const acc_t<T>* dloss, double scale, int64_t rows, int64_t classes,
                           double label_smoothing, const acc_t<T>* weights, double weight_sum,
                           T* dlogits) {
  using A = acc_t<T>;
  const A eps = static_cast<A>(label_smoothing);
  const A g = dloss[0] * static_cast<A>(scale);
  const A off = eps / static_cast<A>(classes);
  for (int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * classes;
    T* dz = dlogits + r * classes;
    const int64_t y = labels[r];
    // With weights: softmax scaled by (1-eps) w[y] + eps/C sum(w), target (1-eps) w[y] onehot
    // + eps/C w; without, the plain (1, (1-eps) onehot + eps/C).
    const A wy = !weights ? A(1) : y >= 0 && y < classes ? weights[y] : std::numeric_limits<A>::quiet_NaN();
    const A p_scale = weights ? (1 - eps) * wy + off * static_cast<A>(weight_sum) : A(1);
    for (int64_t c = 0; c < classes; ++c) {
      const A p = std::exp(to_acc(z[c]) - lse_rows[r]);
      const A target = off * (weights ? weights[c] : A(1)) + (c == y ? (1 - eps) * wy : A(0));
      dz[c] = from_acc<T>(g * (p * p_scale - target));
    }
  }
}

#define MLAI_INSTANTIATE(T)                                                                     \
  template void softmax_xent_forward<T>(const T*, const int64_t*, int64_t, int64_t, double,     \
                                        const acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*);      \
  template void softmax_xent_backward<T>(const T*, const int64_t*, const acc_t<T>*,             \
                                         const acc_t<T>*, double, int64_t, int64_t, double,     \
                                         const acc_t<T>*, double, T*);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
