// CPU batch normalisation over [rows, c] (NHWC flattened). Statistics and the per-element maths
// run in double for every T (two passes: mean, then variance around it, so a large mean does
// not cancel away the variance); results are rounded to T / acc_t<T> on store.
#include "kernels/batchnorm.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlai::kernels::cpu {

// running_mean and running_var may be null (PyTorch's track_running_stats=False). With rows == 1
// the unbiased variance is undefined (0/0), so the running variance takes the biased one (0);
// PyTorch refuses that batch instead.
template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps) {
  if (rows <= 0)
    throw std::invalid_argument("batchnorm_forward_train: empty batch (rows = " +
                                std::to_string(rows) + "), no statistics to normalise with");
  const double n = static_cast<double>(rows);
  std::vector<double> mean(static_cast<size_t>(c), 0.0), var(static_cast<size_t>(c), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) mean[ch] += x[r * c + ch];
  for (double& m : mean) m /= n;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double d = x[r * c + ch] - mean[ch];
      var[ch] += d * d;
    }
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
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch)
      y[r * c + ch] = static_cast<T>((x[r * c + ch] - mean[ch]) * scale[ch] + beta[ch]);
}

template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps) {
  std::vector<double> scale(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) scale[ch] = gamma[ch] / std::sqrt(running_var[ch] + eps);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch)
      y[r * c + ch] = static_cast<T>(
          (x[r * c + ch] - static_cast<double>(running_mean[ch])) * scale[ch] + beta[ch]);
}

// With xhat = (x - mean) * inv_std: dbeta = sum dy, dgamma = sum dy * xhat, and (the mean and
// variance depend on every row) dx = gamma * inv_std / rows * (rows * dy - dbeta - xhat * dgamma).
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c) {
  std::vector<double> sum_dy(static_cast<size_t>(c), 0.0), sum_dy_xhat(static_cast<size_t>(c), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double g = dy[r * c + ch];
      sum_dy[ch] += g;
      sum_dy_xhat[ch] +=
          g * (x[r * c + ch] - static_cast<double>(save_mean[ch])) * save_inv_std[ch];
    }
  const double n = static_cast<double>(rows);
  std::vector<double> k(static_cast<size_t>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    dbeta[ch] = static_cast<acc_t<T>>(sum_dy[ch]);
    dgamma[ch] = static_cast<acc_t<T>>(sum_dy_xhat[ch]);
    k[ch] = gamma[ch] * static_cast<double>(save_inv_std[ch]) / n;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) {
      const double xhat = (x[r * c + ch] - static_cast<double>(save_mean[ch])) * save_inv_std[ch];
      dx[r * c + ch] =
          static_cast<T>(k[ch] * (n * dy[r * c + ch] - sum_dy[ch] - xhat * sum_dy_xhat[ch]));
    }
}

#define MLAI_INSTANTIATE(T)                                                                       \
  template void batchnorm_forward_train<T>(const T*, const acc_t<T>*, const acc_t<T>*, T*,        \
                                           acc_t<T>*, acc_t<T>*, acc_t<T>*, acc_t<T>*, int64_t,   \
                                           int64_t, double, double);                              \
  template void batchnorm_forward_eval<T>(const T*, const acc_t<T>*, const acc_t<T>*,             \
                                          const acc_t<T>*, const acc_t<T>*, T*, int64_t, int64_t, \
                                          double);                                                \
  template void batchnorm_backward<T>(const T*, const T*, const acc_t<T>*, const acc_t<T>*,       \
                                      const acc_t<T>*, T*, acc_t<T>*, acc_t<T>*, int64_t,         \
                                      int64_t);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
