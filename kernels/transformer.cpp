// CPU twins of kernels/transformer.cu: loops over rows in acc_t<T>, spread over the kernel
// threads (kernels/parallel.h) in blocks of rows whose bounds depend only on the sizes; the
// column sums of layer norm's backward add the blocks' partial sums in block order, so the bits
// do not depend on the thread count.
#include "kernels/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {
// Rows per block: about kElementGrain elements of work.
int64_t rows_grain(int64_t cols) {
  return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(cols, 1));
}
}  // namespace

template <class T>
void layer_norm_forward(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                        acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int64_t cols, double eps) {
  using A = acc_t<T>;
  parallel_for(rows, rows_grain(cols), [=](int64_t r0, int64_t r1) {
    std::vector<A> v(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      A s = 0;
      for (int64_t j = 0; j < cols; ++j) {
        v[j] = to_acc(xr[j]);
        s += v[j];
      }
      const A m = s / static_cast<A>(cols);
      A ss = 0;
      for (int64_t j = 0; j < cols; ++j) ss += (v[j] - m) * (v[j] - m);
      const A rs = A(1) / std::sqrt(ss / static_cast<A>(cols) + static_cast<A>(eps));
      mean[r] = m;
      rstd[r] = rs;
      T* yr = y + r * cols;
      for (int64_t j = 0; j < cols; ++j)
        yr[j] = from_acc<T>((v[j] - m) * rs * (gamma != nullptr ? gamma[j] : A(1)) +
                            (beta != nullptr ? beta[j] : A(0)));
    }
  });
}

// With xhat = (x - mean) rstd and g = dy gamma: dx = rstd (g - mean(g) - xhat mean(g xhat)).
template <class T>
void layer_norm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* mean,
                         const acc_t<T>* rstd, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                         int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  const bool params = dgamma != nullptr || dbeta != nullptr;
  const int64_t grain = rows_grain(cols);
  const int64_t blocks = num_blocks(rows, grain);
  // Per block: the column sums of dy xhat, then of dy (only when a parameter gradient is wanted).
  std::vector<A> partial(params ? static_cast<size_t>(blocks * 2 * cols) : 0, A(0));
  parallel_blocks(rows, grain, [&](int64_t block, int64_t r0, int64_t r1) {
    std::vector<A> xh(static_cast<size_t>(cols)), g(static_cast<size_t>(cols));
    A* p_dyx = params ? partial.data() + block * 2 * cols : nullptr;
    A* p_dy = params ? p_dyx + cols : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      const T* dyr = dy + r * cols;
      const A m = mean[r], rs = rstd[r];
      A sg = 0, sgx = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const A d = to_acc(dyr[j]);
        xh[j] = (to_acc(xr[j]) - m) * rs;
        g[j] = gamma != nullptr ? d * gamma[j] : d;
        sg += g[j];
        sgx += g[j] * xh[j];
        if (params) {
          p_dyx[j] += d * xh[j];
          p_dy[j] += d;
        }
      }
      const A inv = A(1) / static_cast<A>(cols);
      const A mg = sg * inv, mgx = sgx * inv;
      T* dxr = dx + r * cols;
      for (int64_t j = 0; j < cols; ++j) dxr[j] = from_acc<T>(rs * (g[j] - mg - xh[j] * mgx));
    }
  });
  if (!params) return;
  for (int64_t j = 0; j < cols; ++j) {
    double s_dyx = 0, s_dy = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      s_dyx += static_cast<double>(partial[b * 2 * cols + j]);
      s_dy += static_cast<double>(partial[b * 2 * cols + cols + j]);
    }
    if (dgamma != nullptr) dgamma[j] = static_cast<A>(s_dyx);
    if (dbeta != nullptr) dbeta[j] = static_cast<A>(s_dy);
  }
}

namespace {
// Phi(x), the standard normal distribution function, and phi(x), its density, in double (the
// float64 path: std::erf and std::exp).
double normal_cdf(double v) { return 0.5 * (1.0 + std::erf(v * 0.70710678118654752440)); }
double normal_pdf(double v) { return 0.39894228040143267794 * std::exp(-0.5 * v * v); }

// The same in float lanes, without branches or library calls, so that GCC vectorizes the
// loops (glibc's erff and expf are scalar calls: GELU took 10% of a ViT's CPU step).
// exp: 2^n e^r with n = round(x log2 e), r = x - n ln 2 (ln 2 in two parts), e^r by its Taylor
// series to r^7 (|r| <= 0.347: truncation under 6e-9, relative); x clamped to [-87, 88], where
// floats stay normal.
inline float exp_lane(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  const float p =
      1.0f +
      r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
                                                                   r * (1.0f / 720 +
                                                                        r * (1.0f / 5040)))))));
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
// Phi(x) = erfc(-x / sqrt 2) / 2 with Numerical Recipes' erfcc (a Chebyshev fit whose relative
// error is under 1.2e-7 everywhere, the far tails included): erfc(z) = t exp(-z^2 + P(t)),
// t = 1 / (1 + z / 2) for z >= 0, and erfc(-z) = 2 - erfc(z).
inline float normal_cdf(float x) {
  const float z = std::abs(x) * 0.70710678118654752f;
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float poly =
      -1.26551223f +
      t * (1.00002368f +
           t * (0.37409196f +
                t * (0.09678418f +
                     t * (-0.18628806f +
                          t * (0.27886807f +
                               t * (-1.13520398f +
                                    t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  const float half_erfc = 0.5f * t * exp_lane(poly - z * z);
  return x < 0 ? half_erfc : 1.0f - half_erfc;
}
inline float normal_pdf(float x) { return 0.39894228040143267794f * exp_lane(-0.5f * x * x); }

// The loops, in AVX-512, AVX2 and baseline versions chosen at load time (no FMA: mlai builds
// with -ffp-contract=off, so the three give the same bits).
#define MLAI_GELU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
template <class T>
MLAI_GELU_CLONES void gelu_loop(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const auto v = to_acc(x[i]);
    y[i] = from_acc<T>(v * normal_cdf(v));
  }
}
template <class T>
MLAI_GELU_CLONES void gelu_backward_loop(const T* dy, const T* x, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const auto v = to_acc(x[i]);
    dx[i] = from_acc<T>(to_acc(dy[i]) * (normal_cdf(v) + v * normal_pdf(v)));
  }
}
#undef MLAI_GELU_CLONES
}  // namespace

template <class T>
void gelu(const T* x, T* y, int64_t n) {
  parallel_for(n, kElementGrain,
               [=](int64_t i0, int64_t i1) { gelu_loop(x + i0, y + i0, i1 - i0); });
}

template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, int64_t n) {
  parallel_for(n, kElementGrain, [=](int64_t i0, int64_t i1) {
    gelu_backward_loop(dy + i0, x + i0, dx + i0, i1 - i0);
  });
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t cols) {
  using A = acc_t<T>;
  parallel_for(rows, rows_grain(cols), [=](int64_t r0, int64_t r1) {
    std::vector<A> e(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * cols;
      A mx = -std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, to_acc(xr[j]));
      A s = 0;
      for (int64_t j = 0; j < cols; ++j) {
        e[j] = std::exp(to_acc(xr[j]) - mx);
        s += e[j];
      }
      const A inv = A(1) / s;
      T* yr = y + r * cols;
      for (int64_t j = 0; j < cols; ++j) yr[j] = from_acc<T>(e[j] * inv);
    }
  });
}

template <class T>
void softmax_rows_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols,
                           double scale) {
  using A = acc_t<T>;
  const A sc = static_cast<A>(scale);
  parallel_for(rows, rows_grain(cols), [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* yr = y + r * cols;
      const T* dyr = dy + r * cols;
      A s = 0;
      for (int64_t j = 0; j < cols; ++j) s += to_acc(dyr[j]) * to_acc(yr[j]);
      T* dxr = dx + r * cols;
      for (int64_t j = 0; j < cols; ++j)
        dxr[j] = from_acc<T>(sc * to_acc(yr[j]) * (to_acc(dyr[j]) - s));
    }
  });
}

template <class T>
void embed_tokens(const T* x, const T* cls, const T* pos, T* out, int64_t n, int64_t patches,
                  int64_t e) {
  const int64_t tokens = patches + 1;
  parallel_for(n * tokens, rows_grain(e), [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / tokens, t = r % tokens;
      const T* src = t == 0 ? cls : x + (b * patches + t - 1) * e;
      const T* p = pos + t * e;
      T* o = out + r * e;
      for (int64_t j = 0; j < e; ++j) o[j] = from_acc<T>(to_acc(src[j]) + to_acc(p[j]));
    }
  });
}

template <class T>
void copy_tokens(const T* src, int64_t src_tokens, int64_t src_at, T* dst, int64_t dst_tokens,
                 int64_t dst_at, int64_t count, int64_t n, int64_t e) {
  parallel_for(n, rows_grain(count * e), [=](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      std::copy(src + (b * src_tokens + src_at) * e, src + (b * src_tokens + src_at + count) * e,
                dst + (b * dst_tokens + dst_at) * e);
  });
}

#define MLAI_INSTANTIATE(T)                                                                    \
  template void layer_norm_forward<T>(const T*, const acc_t<T>*, const acc_t<T>*, T*,          \
                                      acc_t<T>*, acc_t<T>*, int64_t, int64_t, double);         \
  template void layer_norm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,   \
                                       const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t,     \
                                       int64_t);                                               \
  template void gelu<T>(const T*, T*, int64_t);                                                \
  template void gelu_backward<T>(const T*, const T*, T*, int64_t);                             \
  template void softmax_rows<T>(const T*, T*, int64_t, int64_t);                               \
  template void softmax_rows_backward<T>(const T*, const T*, T*, int64_t, int64_t, double);    \
  template void embed_tokens<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);  \
  template void copy_tokens<T>(const T*, int64_t, int64_t, T*, int64_t, int64_t, int64_t,      \
                               int64_t, int64_t);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
