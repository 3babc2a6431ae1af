// CPU batch normalisation over [rows, c] (NHWC flattened). Statistics take two passes (mean,
// then variance around it, so a large mean does not cancel away the variance). The per-element
// maths runs in T's own lanes (16 floats to an AVX-512 register, not 8 doubles): sums over at
// most kChunkRows rows in T, each chunk's sums then added in double, and the per-channel
// factors computed in double and rounded to T once. Rows are cut into fixed blocks spread over
// the kernel threads; each block sums into its own partials, which are added in block order
// (kernels/parallel.h), so any thread count gives the same bits.
#include "kernels/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {
// Loops here keep every branch out of the inner loop, so they vectorize (a per-element branch on
// random signs is mispredicted half the time): the options are template arguments, and the
// activation and its mask run as selects in T over a row, after the maths rounded to T.
// relu, or relu6 with kCapped (nan becomes 0 either way).
template <class T, bool kCapped>
void act_row(T* y, int64_t c) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const T v = y[ch];
    const T r = v > 0 ? v : T(0);
    if constexpr (kCapped) {
      y[ch] = r < T(6) ? r : T(6);
    } else {
      y[ch] = r;
    }
  }
}
// g = dy where 0 < y < cap, else 0.
template <class T>
void masked_row(const T* dy, const T* y, T* g, int64_t c, T cap) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const T d = dy[ch], v = y[ch];
    g[ch] = v > 0 && v < cap ? d : T(0);
  }
}

// y = (x - mean) * scale + shift per channel, plus z, then the activation, in T (x - mean first:
// exact where x is near the mean, where scale * x + (shift - mean * scale) would cancel).
template <class T, bool kZ, BnAct::Kind kAct>
void affine_act_loop(const T* x, const T* mean, const T* scale, const T* shift, const T* z, T* y,
                     int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    T* yr = y + r * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      T v = (xr[ch] - mean[ch]) * scale[ch] + shift[ch];
      if constexpr (kZ) v += z[r * c + ch];
      yr[ch] = v;
    }
    if constexpr (kAct != BnAct::kNone) act_row<T, kAct == BnAct::kRelu6>(yr, c);
  }
}
template <class T, bool kZ>
void affine_act_rows(const T* x, const T* mean, const T* scale, const T* shift, const T* z,
                     BnAct act, T* y, int64_t rows, int64_t c) {
  switch (act.kind) {
    case BnAct::kNone:
      return affine_act_loop<T, kZ, BnAct::kNone>(x, mean, scale, shift, z, y, rows, c);
    case BnAct::kRelu:
      return affine_act_loop<T, kZ, BnAct::kRelu>(x, mean, scale, shift, z, y, rows, c);
    case BnAct::kRelu6:
      return affine_act_loop<T, kZ, BnAct::kRelu6>(x, mean, scale, shift, z, y, rows, c);
  }
}

// Rows per block: about kElementGrain elements.
int64_t row_grain(int64_t c) {
  return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(c, 1));
}

// The per-channel factors (computed in double) rounded to T, then the rows in parallel.
template <class T>
void affine_act(const T* x, const std::vector<double>& mean, const std::vector<double>& scale,
                const std::vector<double>& shift, const T* z, BnAct act, T* y, int64_t rows,
                int64_t c) {
  const std::vector<T> m(mean.begin(), mean.end()), a(scale.begin(), scale.end()),
      b(shift.begin(), shift.end());
  parallel_for(rows, row_grain(c), [&](int64_t r0, int64_t r1) {
    if (z != nullptr) {
      affine_act_rows<T, true>(x + r0 * c, m.data(), a.data(), b.data(), z + r0 * c, act,
                               y + r0 * c, r1 - r0, c);
    } else {
      affine_act_rows<T, false>(x + r0 * c, m.data(), a.data(), b.data(), nullptr, act, y + r0 * c,
                                r1 - r0, c);
    }
  });
}

// Rows a sum runs over in T before it is added into the block's double partials: 64 roundings
// of a float sum at most (a relative error near 4e-6 at worst, 5e-7 typically).
constexpr int64_t kChunkRows = 64;

// sum[ch] += term(r, ch, acc) over rows [r0, r1), in T over chunks of kChunkRows rows: term
// adds row r's contributions into acc (c values of T).
template <class T, class Term>
void chunked_sums(double* sum, int64_t r0, int64_t r1, int64_t c, Term term) {
  std::vector<T> acc(static_cast<size_t>(c));
  for (int64_t q0 = r0; q0 < r1; q0 += kChunkRows) {
    std::fill(acc.begin(), acc.end(), T(0));
    const int64_t q1 = std::min(r1, q0 + kChunkRows);
    for (int64_t r = q0; r < q1; ++r) term(r, acc.data());
    for (int64_t ch = 0; ch < c; ++ch) sum[ch] += static_cast<double>(acc[static_cast<size_t>(ch)]);
  }
}

// Per-channel sums over all rows: block k adds its rows into partials[k * c ...] with
// add_rows(partial, r0, r1), then the blocks are added in order into `out` (c values).
template <class AddRows>
void channel_sums(int64_t rows, int64_t c, std::vector<double>& out, AddRows add_rows) {
  const int64_t grain = row_grain(c);
  std::vector<double> partials(static_cast<size_t>(num_blocks(rows, grain) * c), 0.0);
  parallel_blocks(rows, grain, [&](int64_t k, int64_t r0, int64_t r1) {
    add_rows(partials.data() + k * c, r0, r1);
  });
  out.assign(static_cast<size_t>(c), 0.0);
  for (size_t i = 0; i < partials.size(); ++i) out[i % static_cast<size_t>(c)] += partials[i];
}

// Two sums at once (batch norm's backward): partials of a and b side by side per block.
template <class AddRows>
void channel_sums2(int64_t rows, int64_t c, std::vector<double>& a, std::vector<double>& b,
                   AddRows add_rows) {
  const int64_t grain = row_grain(c);
  const int64_t blocks = num_blocks(rows, grain);
  std::vector<double> partials(static_cast<size_t>(blocks * 2 * c), 0.0);
  parallel_blocks(rows, grain, [&](int64_t k, int64_t r0, int64_t r1) {
    add_rows(partials.data() + k * 2 * c, partials.data() + k * 2 * c + c, r0, r1);
  });
  a.assign(static_cast<size_t>(c), 0.0);
  b.assign(static_cast<size_t>(c), 0.0);
  for (int64_t k = 0; k < blocks; ++k)
    for (int64_t ch = 0; ch < c; ++ch) {
      a[ch] += partials[(k * 2) * c + ch];
      b[ch] += partials[(k * 2 + 1) * c + ch];
    }
}
}  // namespace

// running_mean and running_var may be null (PyTorch's track_running_stats=False). With rows == 1
// the unbiased variance is undefined (0/0), so the running variance takes the biased one (0);
// PyTorch refuses that batch instead.
template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps, const T* z, BnAct act) {
  if (rows <= 0)
    throw std::invalid_argument("batchnorm_forward_train: empty batch (rows = " +
                                std::to_string(rows) + "), no statistics to normalise with");
  const double n = static_cast<double>(rows);
  std::vector<double> mean, var;
  channel_sums(rows, c, mean, [&](double* sum, int64_t r0, int64_t r1) {
    chunked_sums<T>(sum, r0, r1, c, [&](int64_t r, T* __restrict acc) {
      const T* __restrict xr = x + r * c;
      for (int64_t ch = 0; ch < c; ++ch) acc[ch] += xr[ch];
    });
  });
  for (double& m : mean) m /= n;
  const std::vector<T> mean_t(mean.begin(), mean.end());
  channel_sums(rows, c, var, [&](double* sum, int64_t r0, int64_t r1) {
    chunked_sums<T>(sum, r0, r1, c, [&](int64_t r, T* __restrict acc) {
      const T* __restrict xr = x + r * c;
      const T* __restrict mt = mean_t.data();
      for (int64_t ch = 0; ch < c; ++ch) {
        const T d = xr[ch] - mt[ch];
        acc[ch] += d * d;
      }
    });
  });
  for (double& v : var) v /= n;  // biased: the one training normalises with

  std::vector<double> scale(static_cast<size_t>(c));
  const double unbias = rows > 1 ? n / (n - 1) : 1.0;
  for (int64_t ch = 0; ch < c; ++ch) {
    const double inv_std = 1.0 / std::sqrt(var[ch] + eps);
    scale[ch] = gamma[ch] * inv_std;
    save_mean[ch] = static_cast<acc_t<T>>(mean[ch]);
    save_inv_std[ch] = static_cast<acc_t<T>>(inv_std);
    if (running_mean != nullptr)
      running_mean[ch] =
          static_cast<acc_t<T>>((1 - momentum) * running_mean[ch] + momentum * mean[ch]);
    if (running_var != nullptr)
      running_var[ch] =
          static_cast<acc_t<T>>((1 - momentum) * running_var[ch] + momentum * var[ch] * unbias);
  }
  const std::vector<double> shift(beta, beta + c);
  affine_act(x, mean, scale, shift, z, act, y, rows, c);
}

template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z, BnAct act) {
  std::vector<double> scale(static_cast<size_t>(c)), mean(running_mean, running_mean + c),
      shift(beta, beta + c);
  for (int64_t ch = 0; ch < c; ++ch) scale[ch] = gamma[ch] / std::sqrt(running_var[ch] + eps);
  affine_act(x, mean, scale, shift, z, act, y, rows, c);
}

// With xhat = (x - mean) * inv_std: dbeta = sum dy, dgamma = sum dy * xhat, and (the mean and
// variance depend on every row) dx = gamma * inv_std / rows * (rows * dy - dbeta - xhat * dgamma).
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y, T* dz, float y_cap) {
  // The gradient reaching batch norm, a row at a time: dy, or dy through the activation's mask,
  // written to dz when wanted (the residual's gradient) or to the block's scratch row.
  auto grad_row = [&](int64_t r, std::vector<T>& scratch) -> const T* {
    if (y == nullptr) {
      if (dz != nullptr) std::copy(dy + r * c, dy + (r + 1) * c, dz + r * c);
      return dy + r * c;
    }
    T* g = dz != nullptr ? dz + r * c : scratch.data();
    masked_row(dy + r * c, y + r * c, g, c, static_cast<T>(y_cap));
    return g;
  };
  const size_t scratch_size = y != nullptr && dz == nullptr ? static_cast<size_t>(c) : 0;
  std::vector<double> sum_dy, sum_dy_xhat;
  const std::vector<T> mean_t(save_mean, save_mean + c), inv_std_t(save_inv_std, save_inv_std + c);
  channel_sums2(rows, c, sum_dy, sum_dy_xhat,
                [&](double* s_dy, double* s_dyx, int64_t r0, int64_t r1) {
                  std::vector<T> scratch(scratch_size), acc(static_cast<size_t>(2 * c));
                  for (int64_t q0 = r0; q0 < r1; q0 += kChunkRows) {
                    std::fill(acc.begin(), acc.end(), T(0));
                    T* __restrict a_dy = acc.data();
                    T* __restrict a_dyx = acc.data() + c;
                    const T* __restrict mt = mean_t.data();
                    const T* __restrict it = inv_std_t.data();
                    for (int64_t r = q0; r < std::min(r1, q0 + kChunkRows); ++r) {
                      const T* __restrict g = grad_row(r, scratch);
                      const T* __restrict xr = x + r * c;
                      for (int64_t ch = 0; ch < c; ++ch) {
                        a_dy[ch] += g[ch];
                        a_dyx[ch] += g[ch] * ((xr[ch] - mt[ch]) * it[ch]);
                      }
                    }
                    for (int64_t ch = 0; ch < c; ++ch) {
                      s_dy[ch] += static_cast<double>(a_dy[ch]);
                      s_dyx[ch] += static_cast<double>(a_dyx[ch]);
                    }
                  }
                });
  // dx = k (n g - sum_dy - xhat sum_dyx) = a g - b - (x - mean) e, with the per-channel factors
  // a = k n, b = k sum_dy and e = k inv_std sum_dyx computed in double and rounded to T.
  const double n = static_cast<double>(rows);
  std::vector<T> fa(static_cast<size_t>(c)), fb(static_cast<size_t>(c)), fe(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    dbeta[ch] = static_cast<acc_t<T>>(sum_dy[ch]);
    dgamma[ch] = static_cast<acc_t<T>>(sum_dy_xhat[ch]);
    const double k = gamma[ch] * static_cast<double>(save_inv_std[ch]) / n;
    fa[ch] = static_cast<T>(k * n);
    fb[ch] = static_cast<T>(k * sum_dy[ch]);
    fe[ch] = static_cast<T>(k * static_cast<double>(save_inv_std[ch]) * sum_dy_xhat[ch]);
  }
  parallel_for(rows, row_grain(c), [&](int64_t r0, int64_t r1) {
    std::vector<T> scratch(scratch_size);
    const T* __restrict mt = mean_t.data();
    for (int64_t r = r0; r < r1; ++r) {
      // dz (when written) already holds this row's gradient; otherwise it is made again.
      const T* __restrict g =
          dz != nullptr ? dz + r * c : (y != nullptr ? grad_row(r, scratch) : dy + r * c);
      const T* __restrict xr = x + r * c;
      T* __restrict dxr = dx + r * c;
      for (int64_t ch = 0; ch < c; ++ch)
        dxr[ch] = fa[ch] * g[ch] - fb[ch] - (xr[ch] - mt[ch]) * fe[ch];
    }
  });
}

#define MLAI_INSTANTIATE(T)                                                                        \
  template void batchnorm_forward_train<T>(const T*, const acc_t<T>*, const acc_t<T>*, T*,         \
                                           acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*, int64_t,    \
                                           int64_t, double, double, const T*, BnAct);              \
  template void batchnorm_forward_eval<T>(const T*, const acc_t<T>*, const acc_t<T>*,              \
                                          const acc_t<T>*, const acc_t<T>*, T*, int64_t, int64_t,  \
                                          double, const T*, BnAct);                                \
  template void batchnorm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,        \
                                      const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t, int64_t, \
                                      const T*, T*, float);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
