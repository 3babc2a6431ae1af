// CPU twins of kernels/transformer.cu: loops over rows in acc_t<T>, spread over the kernel
// threads (kernels/parallel.h) in blocks of rows whose bounds depend only on the sizes; the
// column sums of layer norm's backward add the blocks' partial sums in block order, so the bits
// do not depend on the thread count.
#include "kernels/transformer.h"

#include <algorithm>
#include <cmath>
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
// Phi(x), the standard normal distribution function, and phi(x), its density.
template <class A>
A normal_cdf(A v) {
  return A(0.5) * (A(1) + std::erf(v * A(0.70710678118654752440)));
}
template <class A>
A normal_pdf(A v) {
  return A(0.39894228040143267794) * std::exp(A(-0.5) * v * v);
}
}  // namespace

template <class T>
void gelu(const T* x, T* y, int64_t n) {
  parallel_for(n, kElementGrain, [=](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto v = to_acc(x[i]);
      y[i] = from_acc<T>(v * normal_cdf(v));
    }
  });
}

template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, int64_t n) {
  parallel_for(n, kElementGrain, [=](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const auto v = to_acc(x[i]);
      dx[i] = from_acc<T>(to_acc(dy[i]) * (normal_cdf(v) + v * normal_pdf(v)));
    }
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
