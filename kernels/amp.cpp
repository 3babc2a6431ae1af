// CPU twin of kernels/amp.cu: unscale every gradient in place and flag any inf/nan.
#include "kernels/amp.h"

#include <cmath>

namespace mlai::kernels::cpu {

template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf) {
  const float s = inv_scale[0];
  bool bad = false;
  for (int t = 0; t < count; ++t) {
    T* p = tensors[t];
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const float v = static_cast<float>(to_acc(p[i]));
      bad |= !std::isfinite(v);
      p[i] = from_acc<T>(v * s);
    }
  }
  if (bad) found_inf[0] = 1.0f;
}

template void unscale_check_finite<float>(float* const*, const int64_t*, int, const float*,
                                          float*);
template void unscale_check_finite<Half>(Half* const*, const int64_t*, int, const float*, float*);
template void unscale_check_finite<BFloat16>(BFloat16* const*, const int64_t*, int, const float*,
                                             float*);

}  // namespace mlai::kernels::cpu
