// CPU twins of kernels/optim.cu, in float arithmetic like the GPU and PyTorch.
#include "kernels/optim.h"

#include <cmath>
#include <vector>

namespace mlai::kernels::cpu {

namespace {
// The gradient of element i in float: float gradients are read as they are (the loops stay
// the vectorized float loops they were), fp16/bf16 ones converted.
template <class G>
inline float grad_at(const G* __restrict g, int64_t i) {
  if constexpr (std::is_same_v<G, float>) {
    return g[i];
  } else {
    return to_acc(g[i]);
  }
}

// The clip_value clamp: comparisons, so NaN stays NaN (as torch.clamp) and the loop still
// vectorizes to min/max instructions (std::fmin would not, and would turn NaN into the bound).
inline float clamp(float d, float clip) { return d < -clip ? -clip : (d > clip ? clip : d); }

// working = master rounded to G (mixed precision), a separate pass so the update loop above
// it keeps its shape.
template <class G>
void refresh_working(G* const* working, float* const* params, const int64_t* sizes, int t) {
  if (working == nullptr || working[t] == nullptr) return;
  G* __restrict w = working[t];
  const float* __restrict p = params[t];
  for (int64_t i = 0; i < sizes[t]; ++i) w[i] = from_acc<G>(p[i]);
}
}  // namespace

namespace {
// sgd_step with each tensor's step (gradient plus weight decay) times ratios[t] (LARS's trust
// ratios; null: 1, which changes no bit).
template <class G>
void sgd_impl(float* const* params, const G* const* grads, G* const* working,
              float* const* momentum, const int64_t* sizes, int count, const SgdArgs& a,
              const float* inv_scale, const float* ratios) {
  // Options in locals and __restrict pointers, so that GCC unswitches the branches and
  // vectorizes the loop (read through `a` with aliasing pointers it stays scalar, "control flow
  // in loop": 5x slower). The arithmetic per element is unchanged, so results are bit-identical.
  const float lr = static_cast<float>(rate_of(a)), mom = static_cast<float>(a.momentum),
              damp = static_cast<float>(a.dampening), wd = static_cast<float>(a.weight_decay),
              gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  const bool first = step_of(a) == 1, nesterov = a.nesterov, use_buf = a.momentum != 0;
  // Clipping is a separate instantiation of the loop: a runtime test inside it would keep GCC
  // from vectorizing, and an always-on clamp costs the unclipped loop a third of its speed.
  auto run = [=]<bool kClip>() {
    for (int t = 0; t < count; ++t) {
      float* __restrict p = params[t];
      const G* __restrict g = grads[t];
      float* __restrict buf = use_buf ? momentum[t] : nullptr;
      const int64_t n = sizes[t];
      const float r = ratios ? ratios[t] : 1.0f;
      for (int64_t i = 0; i < n; ++i) {
        float d = grad_at(g, i) * gs;
        if constexpr (kClip) d = clamp(d, clip);
        if (wd != 0) d += wd * p[i];
        d *= r;
        if (use_buf) {
          buf[i] = first ? d : mom * buf[i] + (1 - damp) * d;
          d = nesterov ? d + mom * buf[i] : buf[i];
        }
        p[i] -= lr * d;
      }
      refresh_working(working, params, sizes, t);
    }
  };
  if (clip < std::numeric_limits<float>::infinity()) {
    run.template operator()<true>();
  } else {
    run.template operator()<false>();
  }
}

}  // namespace

template <class G>
void sgd_step(float* const* params, const G* const* grads, G* const* working,
              float* const* momentum, const int64_t* sizes, int count, const SgdArgs& a,
              const float* inv_scale, const float* skip_if) {
  if (skip_if && *skip_if != 0.0f) return;
  sgd_impl(params, grads, working, momentum, sizes, count, a, inv_scale, nullptr);
}

template <class G>
void lars_step(float* const* params, const G* const* grads, G* const* working,
               float* const* momentum, const int64_t* sizes, int count, const LarsArgs& a,
               const float* inv_scale, const float* skip_if, double* /*scratch*/) {
  if (skip_if && *skip_if != 0.0f) return;
  SgdArgs s;
  s.lr = a.lr;
  s.momentum = a.momentum;
  s.dampening = a.dampening;
  s.weight_decay = a.weight_decay;
  s.nesterov = a.nesterov;
  s.step = a.step;
  s.step_offset = a.step_offset;
  s.lr_and_step = a.lr_and_step;
  s.grad_scale = a.grad_scale;
  s.clip_value = a.clip_value;
  if (a.weight_decay == 0) {  // not adapted: plain SGD
    sgd_impl(params, grads, working, momentum, sizes, count, s, inv_scale, nullptr);
    return;
  }
  // The norms of each master and of its (scaled, clipped) gradient, summed in double.
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  std::vector<float> ratios(static_cast<size_t>(count));
  for (int t = 0; t < count; ++t) {
    const float* __restrict p = params[t];
    const G* __restrict g = grads[t];
    double pp = 0, gg = 0;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const float d = clamp(grad_at(g, i) * gs, clip);
      pp += static_cast<double>(p[i]) * p[i];
      gg += static_cast<double>(d) * d;
    }
    ratios[static_cast<size_t>(t)] = trust_ratio(a, std::sqrt(pp), std::sqrt(gg));
  }
  sgd_impl(params, grads, working, momentum, sizes, count, s, inv_scale, ratios.data());
}

template <class G>
void adam_step(float* const* params, const G* const* grads, G* const* working,
               float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count,
               const AdamArgs& a, const float* inv_scale, const float* skip_if) {
  if (skip_if && *skip_if != 0.0f) return;
  const double rate = rate_of(a);
  // 1 - beta in double, then rounded, as PyTorch's Adam passes Python's 1 - beta2 (1 -
  // float(0.999) is 1.3e-5 off 0.001).
  const float lr = static_cast<float>(rate), b1 = static_cast<float>(a.beta1),
              b2 = static_cast<float>(a.beta2), c1 = static_cast<float>(1 - a.beta1),
              c2 = static_cast<float>(1 - a.beta2), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay);
  const double t = static_cast<double>(step_of(a));
  const float step_size = static_cast<float>(rate / (1 - std::pow(a.beta1, t)));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(a.beta2, t)));
  // As in sgd_step; the sqrt also needs -fno-math-errno (CMakeLists.txt): with errno, each
  // sqrt is a branch to sqrtf for negative inputs and the loop stays scalar (4x slower).
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  const bool decoupled = a.decoupled;
  auto run = [=]<bool kClip>() {  // as in sgd_step
    for (int k = 0; k < count; ++k) {
      float *__restrict p = params[k], *__restrict m = exp_avg[k], *__restrict v = exp_avg_sq[k];
      const G* __restrict g = grads[k];
      const int64_t n = sizes[k];
      for (int64_t i = 0; i < n; ++i) {
        float d = grad_at(g, i) * gs;
        if constexpr (kClip) d = clamp(d, clip);
        if (decoupled) {
          p[i] *= 1 - lr * wd;
        } else if (wd != 0) {
          d += wd * p[i];
        }
        m[i] = b1 * m[i] + c1 * d;
        v[i] = b2 * v[i] + c2 * d * d;
        p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
      }
      refresh_working(working, params, sizes, k);
    }
  };
  if (clip < std::numeric_limits<float>::infinity()) {
    run.template operator()<true>();
  } else {
    run.template operator()<false>();
  }
}

template <class G>
void lamb_step(float* const* params, const G* const* grads, G* const* working,
               float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count,
               const LambArgs& a, const float* inv_scale, const float* skip_if,
               double* /*scratch*/) {
  if (skip_if && *skip_if != 0.0f) return;
  const double t = static_cast<double>(step_of(a));
  // 1 - beta in double, then rounded (as PyTorch passes Python's 1 - beta to its kernels):
  // 1 - float(0.999) would be 1.3e-5 off.
  const float lr = static_cast<float>(rate_of(a)), b1 = static_cast<float>(a.beta1),
              b2 = static_cast<float>(a.beta2), c1 = static_cast<float>(1 - a.beta1),
              c2 = static_cast<float>(1 - a.beta2), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay),
              bc1 = static_cast<float>(1 - std::pow(a.beta1, t)),
              bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(a.beta2, t))),
              gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  const bool adapt = wd != 0;
  for (int k = 0; k < count; ++k) {
    float* __restrict p = params[k], * __restrict m = exp_avg[k], * __restrict v = exp_avg_sq[k];
    const G* __restrict g = grads[k];
    const int64_t n = sizes[k];
    // The update LAMB scales, from the new moments (the same expression in both passes).
    auto update = [&](int64_t i) {
      float u = m[i] / bc1 / (std::sqrt(v[i]) / bc2_sqrt + eps);
      if (adapt) u += wd * p[i];
      return u;
    };
    // Pass 1: the moments, and the norms of the master and its update (in double).
    double pp = 0, uu = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float d = clamp(grad_at(g, i) * gs, clip);
      m[i] = b1 * m[i] + c1 * d;
      v[i] = b2 * v[i] + c2 * d * d;
      if (adapt) {
        const float u = update(i);
        pp += static_cast<double>(p[i]) * p[i];
        uu += static_cast<double>(u) * u;
      }
    }
    const float r = adapt ? trust_ratio(a, std::sqrt(pp), std::sqrt(uu)) : 1.0f;
    // Pass 2: the step.
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (update(i) * r);
    refresh_working(working, params, sizes, k);
  }
}

void ema_update(float* const* avg, const float* const* cur, const int64_t* sizes, int count,
                float decay, float one_minus_decay) {
  for (int t = 0; t < count; ++t) {
    float* __restrict a = avg[t];
    const float* __restrict c = cur[t];
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const float kept = decay * a[i];
      const float added = one_minus_decay * c[i];
      a[i] = kept + added;
    }
  }
}

#define MLAI_INSTANTIATE(G)                                                                     \
  template void sgd_step<G>(float* const*, const G* const*, G* const*, float* const*,           \
                            const int64_t*, int, const SgdArgs&, const float*, const float*);   \
  template void adam_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             float* const*, const int64_t*, int, const AdamArgs&, const float*, \
                             const float*);                                                     \
  template void lars_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             const int64_t*, int, const LarsArgs&, const float*, const float*,  \
                             double*);                                                          \
  template void lamb_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             float* const*, const int64_t*, int, const LambArgs&, const float*, \
                             const float*, double*);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
