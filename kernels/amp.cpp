// CPU twin of kernels/amp.cu: unscale every gradient in place and flag any inf/nan.
#include "kernels/amp.h"

#include <cfloat>
#include <cmath>

namespace mlai::kernels::cpu {

// Written so that GCC vectorizes both loops: the options read once, __restrict, and the finite
// test as a comparison (|v| <= FLT_MAX is false for inf and NaN) into an integer.
template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf) {
  int32_t bad = 0;
  const float s = inv_scale != nullptr ? inv_scale[0] : 1.0f;
  for (int t = 0; t < count; ++t) {
    T* __restrict p = tensors[t];
    const int64_t n = sizes[t];
    if (inv_scale == nullptr) {
      for (int64_t i = 0; i < n; ++i) bad |= !(std::fabs(to_acc(p[i])) <= FLT_MAX);
      continue;
    }
    for (int64_t i = 0; i < n; ++i) {
      const float v = to_acc(p[i]);
      bad |= !(std::fabs(v) <= FLT_MAX);
      p[i] = from_acc<T>(v * s);
    }
  }
  if (bad != 0) found_inf[0] = 1.0f;
}

void update_loss_scale(float* scale, int32_t* growth_tracker, int64_t* skipped, float* found_inf,
                       float growth, float backoff, int32_t interval) {
  if (found_inf[0] != 0.0f) {
    scale[0] *= backoff;
    growth_tracker[0] = 0;
    ++skipped[0];
  } else if (++growth_tracker[0] >= interval) {
    const float grown = scale[0] * growth;
    if (std::isfinite(grown)) scale[0] = grown;
    growth_tracker[0] = 0;
  }
  scale[1] = static_cast<float>(1.0 / static_cast<double>(scale[0]));
  found_inf[0] = 0.0f;
}

template void unscale_check_finite<float>(float* const*, const int64_t*, int, const float*, float*);
template void unscale_check_finite<Half>(Half* const*, const int64_t*, int, const float*, float*);
template void unscale_check_finite<BFloat16>(BFloat16* const*, const int64_t*, int, const float*,
                                             float*);

template <class T>
void sum_squares(const T* const* tensors, const int64_t* sizes, int count, float* sum_sq) {
  double total = 0;
  for (int t = 0; t < count; ++t)
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double v = to_acc(tensors[t][i]);
      total += v * v;
    }
  sum_sq[0] = static_cast<float>(static_cast<double>(sum_sq[0]) + total);
}
template void sum_squares<float>(const float* const*, const int64_t*, int, float*);
template void sum_squares<Half>(const Half* const*, const int64_t*, int, float*);
template void sum_squares<BFloat16>(const BFloat16* const*, const int64_t*, int, float*);

void clip_norm_factor(const float* sum_sq, const float* inv_scale, float grad_scale, float max_norm,
                      float* out) {
  const float inv = inv_scale ? *inv_scale : 1.0f;
  const float norm = std::sqrt(*sum_sq) * inv * grad_scale;
  out[0] = inv * std::fmin(1.0f, max_norm / (norm + 1e-6f));
}

}  // namespace mlai::kernels::cpu
