// CPU twins of kernels/optim.cu, in float arithmetic like the GPU and PyTorch, on the kernel
// pool.
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/half_convert.h"
#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {
// Each tensor is cut into blocks of kElementGrain elements that run on the kernel pool (fixed
// bounds: the same bits on any number of threads), each block into tiles of kTile elements:
// 16-bit gradients are converted a tile at a time into a float buffer (F16C for fp16), so the
// update loops are the same vectorized float loops for every gradient dtype.
constexpr int64_t kTile = 1024;
// The tile loops are functions of their own with __restrict parameters and their settings by
// value, never inlined: inlined into the closures that call them, GCC lost the restrict
// information and kept them scalar (the main job's Adam step took 0.34 ms instead of 0.15).
#define MLAI_TILE __attribute__((noinline)) static

// The gradients [i0, i0 + n) as floats: float ones in place, 16-bit ones converted into buf.
template <class G>
const float* grad_tile(const G* g, int64_t i0, int64_t n, float* buf) {
  if constexpr (std::is_same_v<G, float>) {
    return g + i0;
  } else if constexpr (std::is_same_v<G, Half>) {
    halves_to_floats(reinterpret_cast<const uint16_t*>(g + i0), buf, n);
    return buf;
  } else {
    for (int64_t k = 0; k < n; ++k) buf[k] = to_acc(g[i0 + k]);
    return buf;
  }
}

// working[i0, i0 + n) = the masters rounded to G (mixed precision); nothing without a copy.
template <class G>
void store_working(G* w, const float* p, int64_t i0, int64_t n) {
  if (w == nullptr) return;
  if constexpr (std::is_same_v<G, Half>) {
    floats_to_halves(p + i0, reinterpret_cast<uint16_t*>(w + i0), n);
  } else {
    for (int64_t k = 0; k < n; ++k) w[i0 + k] = from_acc<G>(p[i0 + k]);
  }
}

// fn(block, i0, i1) for the tiles of [0, n), blocks on the pool.
template <class F>
void for_tiles(int64_t n, F&& fn) {
  parallel_blocks(n, kElementGrain, [&](int64_t block, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i += kTile) fn(block, i, std::min(end, i + kTile));
  });
}

// Adds the sums of x^2 and y^2 over a tile (n <= kTile) to *sx and *sy: 256 values at a time
// in 16 float lanes (four 4-wide vectors; 16 squares each, all positive: an ulp or two of
// float), the lanes then added in double, in lane order (a fixed order). GCC's vector
// extensions, because its vectorizer made a slow shuffling loop of the plain lane arrays.
using Float4 = float __attribute__((vector_size(16)));
inline Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MLAI_TILE void sum_squares(const float* __restrict x, const float* __restrict y, int64_t n,
                           double* sx, double* sy) {
  double tx = 0, ty = 0;
  for (int64_t k0 = 0; k0 < n; k0 += 256) {
    const int64_t end = std::min(n, k0 + 256);
    Float4 ax[4] = {}, ay[4] = {};
    int64_t k = k0;
    for (; k + 16 <= end; k += 16)
      for (int j = 0; j < 4; ++j) {
        const Float4 a = load4(x + k + 4 * j), b = load4(y + k + 4 * j);
        ax[j] += a * a;
        ay[j] += b * b;
      }
    for (; k < end; ++k) {
      ax[0][0] += x[k] * x[k];
      ay[0][0] += y[k] * y[k];
    }
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 4; ++l) {
        tx += ax[j][l];
        ty += ay[j][l];
      }
  }
  *sx += tx;
  *sy += ty;
}

// Per-block partial sums of a tensor of n values, added in block order: the tensor's two norms.
struct BlockSums {
  explicit BlockSums(int64_t n)
      : x(static_cast<size_t>(num_blocks(n, kElementGrain))), y(x.size()) {}
  std::vector<double> x, y;
  double norm_x() const { return norm(x); }
  double norm_y() const { return norm(y); }

 private:
  static double norm(const std::vector<double>& v) {
    double s = 0;
    for (double b : v) s += b;
    return std::sqrt(s);
  }
};

// The clip_value clamp: comparisons, so NaN stays NaN (as torch.clamp) and the loop still
// vectorizes to min/max instructions (std::fmin would not, and would turn NaN into the bound).
inline float clamp(float d, float clip) { return d < -clip ? -clip : (d > clip ? clip : d); }

// SGD's settings in locals, so that GCC unswitches the branches and vectorizes the loop (read
// through a struct with aliasing pointers it stays scalar, "control flow in loop": 5x slower).
struct SgdTile {
  float lr, mom, damp, wd, gs, clip, ratio;
  bool first, nesterov, use_buf;
};
// Clipping is a separate instantiation: a runtime test inside would keep GCC from vectorizing,
// and an always-on clamp costs the unclipped loop a third of its speed.
template <bool kClip>
MLAI_TILE void sgd_tile(float* __restrict p, const float* __restrict g, float* __restrict buf,
                        int64_t n, const SgdTile& a) {
  const float lr = a.lr, mom = a.mom, damp = a.damp, wd = a.wd, gs = a.gs, clip = a.clip,
              r = a.ratio;
  const bool first = a.first, nesterov = a.nesterov, use_buf = a.use_buf;
  for (int64_t i = 0; i < n; ++i) {
    float d = g[i] * gs;
    if constexpr (kClip) d = clamp(d, clip);
    if (wd != 0) d += wd * p[i];
    d *= r;
    if (use_buf) {
      buf[i] = first ? d : mom * buf[i] + (1 - damp) * d;
      d = nesterov ? d + mom * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

// Adam's settings (see SgdTile).
struct AdamTile {
  float lr, b1, b2, c1, c2, eps, wd, step_size, bc2_sqrt, gs, clip;
  bool decoupled;
};
// The sqrt also needs -fno-math-errno (CMakeLists.txt): with errno, each sqrt is a branch to
// sqrtf for negative inputs and the loop stays scalar (4x slower).
template <bool kClip>
MLAI_TILE void adam_tile(float* __restrict p, float* __restrict m, float* __restrict v,
                         const float* __restrict g, int64_t n, const AdamTile a) {
  const float lr = a.lr, b1 = a.b1, b2 = a.b2, c1 = a.c1, c2 = a.c2, eps = a.eps, wd = a.wd,
              step_size = a.step_size, bc2_sqrt = a.bc2_sqrt, gs = a.gs, clip = a.clip;
  const bool decoupled = a.decoupled;
  for (int64_t i = 0; i < n; ++i) {
    float d = g[i] * gs;
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
}

// LAMB's settings, and its two tile loops: the moments, and the updates it scales (the same
// expression in both passes).
struct LambTile {
  float lr, b1, b2, c1, c2, eps, wd, bc1, bc2_sqrt, gs, clip;
};
MLAI_TILE void lamb_moments(const float* __restrict g, float* __restrict m, float* __restrict v,
                            int64_t n, const LambTile a) {
  const float b1 = a.b1, b2 = a.b2, c1 = a.c1, c2 = a.c2, gs = a.gs, clip = a.clip;
  for (int64_t i = 0; i < n; ++i) {
    const float d = clamp(g[i] * gs, clip);
    m[i] = b1 * m[i] + c1 * d;
    v[i] = b2 * v[i] + c2 * d * d;
  }
}
MLAI_TILE void lamb_updates(const float* __restrict p, const float* __restrict m,
                            const float* __restrict v, float* __restrict u, int64_t n,
                            const LambTile a) {
  const float eps = a.eps, wd = a.wd, bc1 = a.bc1, bc2_sqrt = a.bc2_sqrt;
  for (int64_t i = 0; i < n; ++i) {
    u[i] = m[i] / bc1 / (std::sqrt(v[i]) / bc2_sqrt + eps);
    if (wd != 0) u[i] += wd * p[i];
  }
}
MLAI_TILE void lamb_apply(float* __restrict p, const float* __restrict u, int64_t n, float lr,
                          float r) {
  for (int64_t i = 0; i < n; ++i) p[i] -= lr * (u[i] * r);
}

// d = clamp(g * gs): the gradients LARS's norm sees.
MLAI_TILE void scaled_grads(const float* __restrict g, float* __restrict d, int64_t n, float gs,
                            float clip) {
  for (int64_t i = 0; i < n; ++i) d[i] = clamp(g[i] * gs, clip);
}

// sgd_step with each tensor's step (gradient plus weight decay) times ratios[t] (LARS's trust
// ratios; null: 1, which changes no bit).
template <class G>
void sgd_impl(float* const* params, const G* const* grads, G* const* working,
              float* const* momentum, const int64_t* sizes, int count, const SgdArgs& a,
              const float* inv_scale, const float* ratios) {
  SgdTile st{static_cast<float>(rate_of(a)),
             static_cast<float>(a.momentum),
             static_cast<float>(a.dampening),
             static_cast<float>(a.weight_decay),
             a.grad_scale * (inv_scale ? *inv_scale : 1.0f),
             a.clip_value,
             1.0f,
             step_of(a) == 1,
             a.nesterov,
             a.momentum != 0};
  const bool clip = a.clip_value < std::numeric_limits<float>::infinity();
  for (int t = 0; t < count; ++t) {
    SgdTile tt = st;
    if (ratios) tt.ratio = ratios[t];
    float* p = params[t];
    float* buf = tt.use_buf ? momentum[t] : nullptr;
    G* w = working ? working[t] : nullptr;
    for_tiles(sizes[t], [&](int64_t, int64_t i0, int64_t i1) {
      float gbuf[kTile];
      const float* g = grad_tile(grads[t], i0, i1 - i0, gbuf);
      float* b = buf ? buf + i0 : nullptr;
      if (clip) {
        sgd_tile<true>(p + i0, g, b, i1 - i0, tt);
      } else {
        sgd_tile<false>(p + i0, g, b, i1 - i0, tt);
      }
      store_working(w, p, i0, i1 - i0);
    });
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
  const SgdArgs& s = a.sgd;
  if (s.weight_decay == 0) {  // not adapted: plain SGD
    sgd_impl(params, grads, working, momentum, sizes, count, s, inv_scale, nullptr);
    return;
  }
  // The norms of each master and of its (scaled, clipped) gradient, summed in double.
  const float gs = s.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = s.clip_value;
  std::vector<float> ratios(static_cast<size_t>(count));
  for (int t = 0; t < count; ++t) {
    const float* p = params[t];
    BlockSums sums(sizes[t]);
    for_tiles(sizes[t], [&](int64_t block, int64_t i0, int64_t i1) {
      float gbuf[kTile], d[kTile];
      scaled_grads(grad_tile(grads[t], i0, i1 - i0, gbuf), d, i1 - i0, gs, clip);
      sum_squares(p + i0, d, i1 - i0, &sums.x[static_cast<size_t>(block)],
                  &sums.y[static_cast<size_t>(block)]);
    });
    ratios[static_cast<size_t>(t)] = trust_ratio(a, sums.norm_x(), sums.norm_y());
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
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  const bool decoupled = a.decoupled;
  const AdamTile at{lr, b1, b2, c1, c2, eps, wd, step_size, bc2_sqrt, gs, clip, decoupled};
  const bool clipped = clip < std::numeric_limits<float>::infinity();
  for (int k = 0; k < count; ++k) {
    float *p = params[k], *m = exp_avg[k], *v = exp_avg_sq[k];
    G* w = working ? working[k] : nullptr;
    for_tiles(sizes[k], [&](int64_t, int64_t i0, int64_t i1) {
      float gbuf[kTile];
      const float* g = grad_tile(grads[k], i0, i1 - i0, gbuf);
      if (clipped) {
        adam_tile<true>(p + i0, m + i0, v + i0, g, i1 - i0, at);
      } else {
        adam_tile<false>(p + i0, m + i0, v + i0, g, i1 - i0, at);
      }
      store_working(w, p, i0, i1 - i0);
    });
  }
}

template <class G>
void lamb_step(float* const* params, const G* const* grads, G* const* working,
               float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count,
               const LambArgs& lamb, const float* inv_scale, const float* skip_if,
               double* /*scratch*/) {
  if (skip_if && *skip_if != 0.0f) return;
  const AdamArgs& a = lamb.adam;
  const double t = static_cast<double>(step_of(a));
  // 1 - beta in double, then rounded (as PyTorch passes Python's 1 - beta to its kernels).
  const float lr = static_cast<float>(rate_of(a)), b1 = static_cast<float>(a.beta1),
              b2 = static_cast<float>(a.beta2), c1 = static_cast<float>(1 - a.beta1),
              c2 = static_cast<float>(1 - a.beta2), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay),
              bc1 = static_cast<float>(1 - std::pow(a.beta1, t)),
              bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(a.beta2, t))),
              gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f), clip = a.clip_value;
  const bool adapt = wd != 0;  // a tensor without weight decay keeps ratio 1
  const LambTile lt{lr, b1, b2, c1, c2, eps, wd, bc1, bc2_sqrt, gs, clip};
  for (int k = 0; k < count; ++k) {
    float *p = params[k], *m = exp_avg[k], *v = exp_avg_sq[k];
    G* w = working ? working[k] : nullptr;
    // Pass 1: the moments, and the norms of the master and its update.
    BlockSums sums(sizes[k]);
    for_tiles(sizes[k], [&](int64_t block, int64_t i0, int64_t i1) {
      float gbuf[kTile];
      const float* g = grad_tile(grads[k], i0, i1 - i0, gbuf);
      const int64_t n = i1 - i0;
      lamb_moments(g, m + i0, v + i0, n, lt);
      if (adapt) {
        float u[kTile];
        lamb_updates(p + i0, m + i0, v + i0, u, n, lt);
        sum_squares(p + i0, u, n, &sums.x[static_cast<size_t>(block)],
                    &sums.y[static_cast<size_t>(block)]);
      }
    });
    const float r = adapt ? trust_ratio(lamb, sums.norm_x(), sums.norm_y()) : 1.0f;
    // Pass 2: the step.
    for_tiles(sizes[k], [&](int64_t, int64_t i0, int64_t i1) {
      float u[kTile];
      const int64_t n = i1 - i0;
      lamb_updates(p + i0, m + i0, v + i0, u, n, lt);
      lamb_apply(p + i0, u, n, lr, r);
      store_working(w, p, i0, n);
    });
  }
}

namespace {
MLAI_TILE void ema_tile(float* __restrict a, const float* __restrict c, int64_t n, float decay,
                        float one_minus_decay) {
  for (int64_t i = 0; i < n; ++i) {
    const float kept = decay * a[i];
    const float added = one_minus_decay * c[i];
    a[i] = kept + added;
  }
}
}  // namespace

void ema_update(float* const* avg, const float* const* cur, const int64_t* sizes, int count,
                float decay, float one_minus_decay) {
  for (int t = 0; t < count; ++t) {
    parallel_for(sizes[t], kElementGrain, [&](int64_t begin, int64_t end) {
      ema_tile(avg[t] + begin, cur[t] + begin, end - begin, decay, one_minus_decay);
    });
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
