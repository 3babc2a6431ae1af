// CPU twins of kernels/optim.cu, in float arithmetic like the GPU and PyTorch.
#include "kernels/optim.h"

#include <cmath>

namespace mlai::kernels::cpu {

void sgd_step(float* const* params, const float* const* grads, float* const* momentum,
              const int64_t* sizes, int count, const SgdArgs& a, const float* skip_if) {
  if (skip_if && *skip_if != 0.0f) return;
  const float lr = static_cast<float>(a.lr), mom = static_cast<float>(a.momentum),
              damp = static_cast<float>(a.dampening), wd = static_cast<float>(a.weight_decay);
  for (int t = 0; t < count; ++t) {
    float* p = params[t];
    const float* g = grads[t];
    float* buf = a.momentum != 0 ? momentum[t] : nullptr;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      float d = g[i] * a.grad_scale;
      if (wd != 0) d += wd * p[i];
      if (buf) {
        buf[i] = a.first_step ? d : mom * buf[i] + (1 - damp) * d;
        d = a.nesterov ? d + mom * buf[i] : buf[i];
      }
      p[i] -= lr * d;
    }
  }
}

void adam_step(float* const* params, const float* const* grads, float* const* exp_avg,
               float* const* exp_avg_sq, const int64_t* sizes, int count, const AdamArgs& a,
               const float* skip_if) {
  if (skip_if && *skip_if != 0.0f) return;
  const float lr = static_cast<float>(a.lr), b1 = static_cast<float>(a.beta1),
              b2 = static_cast<float>(a.beta2), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay);
  const double t = static_cast<double>(a.step);
  const float step_size = static_cast<float>(a.lr / (1 - std::pow(a.beta1, t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(a.beta2, t)));
  for (int k = 0; k < count; ++k) {
    float *p = params[k], *m = exp_avg[k], *v = exp_avg_sq[k];
    const float* g = grads[k];
    for (int64_t i = 0; i < sizes[k]; ++i) {
      float d = g[i] * a.grad_scale;
      if (a.decoupled) {
        p[i] *= 1 - lr * wd;
      } else if (wd != 0) {
        d += wd * p[i];
      }
      m[i] = b1 * m[i] + (1 - b1) * d;
      v[i] = b2 * v[i] + (1 - b2) * d * d;
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  }
}

}  // namespace mlai::kernels::cpu
