// CPU batch normalisation over [rows, c] (NHWC flattened). Statistics and the per-element maths
// run in double for every T (two passes: mean, then variance around it, so a large mean does
// not cancel away the variance); results are rounded to T / acc_t<T> on store. Rows are cut
// into fixed blocks spread over the kernel threads; each block sums into its own partials,
// which are added in block order (kernels/parallel.h), so any thread count gives the same bits.
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
// relu and its mask run as selects in T over a row, after the double maths rounded to T (the
// same values: rounding to nearest keeps signs, and nan and -0 become +0 either way).
template <class T>
void relu_row(T* y, int64_t c) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const T v = y[ch];
    y[ch] = v > 0 ? v : T(0);
  }
}
// g = dy where y > 0, else 0.
template <class T>
void masked_row(const T* dy, const T* y, T* g, int64_t c) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const T d = dy[ch];
    g[ch] = y[ch] > 0 ? d : T(0);
  }
}

// y = (x - mean) * scale + shift per channel, plus z, then relu: in double, rounded once.
template <class T, bool kZ, bool kRelu>
void affine_act_loop(const T* x, const double* mean, const double* scale, const double* shift,
                     const T* z, T* y, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    T* yr = y + r * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      double v = (xr[ch] - mean[ch]) * scale[ch] + shift[ch];
      if constexpr (kZ) v += z[r * c + ch];
      yr[ch] = static_cast<T>(v);
    }
    if constexpr (kRelu) relu_row(yr, c);
  }
}
template <class T>
void affine_act_rows(const T* x, const double* mean, const double* scale, const double* shift,
                     const T* z, bool relu, T* y, int64_t rows, int64_t c) {
  if (z != nullptr && relu) {
    affine_act_loop<T, true, true>(x, mean, scale, shift, z, y, rows, c);
  } else if (z != nullptr) {
    affine_act_loop<T, true, false>(x, mean, scale, shift, z, y, rows, c);
  } else if (relu) {
    affine_act_loop<T, false, true>(x, mean, scale, shift, z, y, rows, c);
  } else {
    affine_act_loop<T, false, false>(x, mean, scale, shift, z, y, rows, c);
  }
}

// Rows per block: about kElementGrain elements.
int64_t row_grain(int64_t c) {
  return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(c, 1));
}

template <class T>
void affine_act(const T* x, const double* mean, const double* scale, const double* shift,
                const T* z, bool relu, T* y, int64_t rows, int64_t c) {
  parallel_for(rows, row_grain(c), [=](int64_t r0, int64_t r1) {
    affine_act_rows(x + r0 * c, mean, scale, shift, z != nullptr ? z + r0 * c : nullptr, relu,
                    y + r0 * c, r1 - r0, c);
  });
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
                             double eps, const T* z, bool relu) {
  if (rows <= 0)
    throw std::invalid_argument("batchnorm_forward_train: empty batch (rows = " +
                                std::to_string(rows) + "), no statistics to normalise with");
  const double n = static_cast<double>(rows);
  std::vector<double> mean, var;
  channel_sums(rows, c, mean, [&](double* sum, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t ch = 0; ch < c; ++ch) sum[ch] += x[r * c + ch];
  });
  for (double& m : mean) m /= n;
  channel_sums(rows, c, var, [&](double* sum, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t ch = 0; ch < c; ++ch) {
        const double d = x[r * c + ch] - mean[ch];
        sum[ch] += d * d;
      }
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
  std::vector<double> shift(beta, beta + c);
  affine_act(x, mean.data(), scale.data(), shift.data(), z, relu, y, rows, c);
}

template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z, bool relu) {
  std::vector<double> scale(static_cast<size_t>(c)), mean(running_mean, running_mean + c),
      shift(beta, beta + c);
  for (int64_t ch = 0; ch < c; ++ch) scale[ch] = gamma[ch] / std::sqrt(running_var[ch] + eps);
  affine_act(x, mean.data(), scale.data(), shift.data(), z, relu, y, rows, c);
}

// With xhat = (x - mean) * inv_std: dbeta = sum dy, dgamma = sum dy * xhat, and (the mean and
// variance depend on every row) dx = gamma * inv_std / rows * (rows * dy - dbeta - xhat * dgamma).
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y, T* dz) {
  // The gradient reaching batch norm, a row at a time: dy, or dy through the relu's mask (y),
  // written to dz when wanted (the residual's gradient) or to the block's scratch row.
  auto grad_row = [&](int64_t r, std::vector<T>& scratch) -> const T* {
    if (y == nullptr) {
      if (dz != nullptr) std::copy(dy + r * c, dy + (r + 1) * c, dz + r * c);
      return dy + r * c;
    }
    T* g = dz != nullptr ? dz + r * c : scratch.data();
    masked_row(dy + r * c, y + r * c, g, c);
    return g;
  };
  const size_t scratch_size = y != nullptr && dz == nullptr ? static_cast<size_t>(c) : 0;
  std::vector<double> sum_dy, sum_dy_xhat;
  channel_sums2(
      rows, c, sum_dy, sum_dy_xhat, [&](double* s_dy, double* s_dyx, int64_t r0, int64_t r1) {
        std::vector<T> scratch(scratch_size);
        for (int64_t r = r0; r < r1; ++r) {
          const T* g = grad_row(r, scratch);
          for (int64_t ch = 0; ch < c; ++ch) {
            s_dy[ch] += g[ch];
            s_dyx[ch] +=
                g[ch] * (x[r * c + ch] - static_cast<double>(save_mean[ch])) * save_inv_std[ch];
          }
        }
      });
  const double n = static_cast<double>(rows);
  std::vector<double> k(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    dbeta[ch] = static_cast<acc_t<T>>(sum_dy[ch]);
    dgamma[ch] = static_cast<acc_t<T>>(sum_dy_xhat[ch]);
    k[ch] = gamma[ch] * static_cast<double>(save_inv_std[ch]) / n;
  }
  parallel_for(rows, row_grain(c), [&](int64_t r0, int64_t r1) {
    std::vector<T> scratch(scratch_size);
    for (int64_t r = r0; r < r1; ++r) {
      // dz (when written) already holds this row's gradient; otherwise it is made again.
      const T* g = dz != nullptr ? dz + r * c : (y != nullptr ? grad_row(r, scratch) : dy + r * c);
      for (int64_t ch = 0; ch < c; ++ch) {
        const double xhat = (x[r * c + ch] - static_cast<double>(save_mean[ch])) * save_inv_std[ch];
        dx[r * c + ch] = static_cast<T>(k[ch] * (n * g[ch] - sum_dy[ch] - xhat * sum_dy_xhat[ch]));
      }
    }
  });
}

#define MLAI_INSTANTIATE(T)                                                                        \
  template void batchnorm_forward_train<T>(const T*, const acc_t<T>*, const acc_t<T>*, T*,         \
                                           acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*, int64_t,    \
                                           int64_t, double, double, const T*, bool);               \
  template void batchnorm_forward_eval<T>(const T*, const acc_t<T>*, const acc_t<T>*,              \
                                          const acc_t<T>*, const acc_t<T>*, T*, int64_t, int64_t,  \
                                          double, const T*, bool);                                 \
  template void batchnorm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,        \
                                      const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t, int64_t, \
                                      const T*, T*);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
