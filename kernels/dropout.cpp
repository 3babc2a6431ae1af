// CPU twin of kernels/dropout.cu.
#include "kernels/dropout.h"

#include "kernels/fill.h"

namespace mlai::kernels::cpu {

template <class T>
void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed,
                     uint64_t offset) {
  const acc_t<T> scale = static_cast<acc_t<T>>(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = uniform01(seed, offset + static_cast<uint64_t>(i)) >= p;
    mask[i] = keep;
    y[i] = from_acc<T>(keep ? to_acc(x[i]) * scale : acc_t<T>(0));
  }
}

template <class T>
void dropout_backward(const T* dy, const uint8_t* mask, T* dx, int64_t n, double scale) {
  const acc_t<T> s = static_cast<acc_t<T>>(scale);
  for (int64_t i = 0; i < n; ++i) dx[i] = from_acc<T>(mask[i] ? to_acc(dy[i]) * s : acc_t<T>(0));
}

#define MLAI_INSTANTIATE(T)                                                                 \
  template void dropout_forward<T>(const T*, T*, uint8_t*, int64_t, double, uint64_t,       \
                                   uint64_t);                                               \
  template void dropout_backward<T>(const T*, const uint8_t*, T*, int64_t, double);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
