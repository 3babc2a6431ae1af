// Batch normalisation over NHWC activations seen as [rows = n*h*w, c] (per-channel statistics
// over rows), PyTorch semantics: training normalises with the batch mean and biased variance,
// and updates running_mean/var with momentum using the unbiased variance; evaluation uses the
// running statistics. Training saves mean and inv_std (1/sqrt(var + eps)) for backward:
// backward needs only those, x, gamma and dy.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

namespace cpu {
// Statistics in acc_t<T> (fp32 for half inputs); gamma/beta/running/saved are acc_t<T>.
template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps);
template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps);
// dx (overwritten), dgamma and dbeta (overwritten) for the training-mode forward.
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma,
                        const acc_t<T>* save_mean, const acc_t<T>* save_inv_std, T* dx,
                        acc_t<T>* dgamma, acc_t<T>* dbeta, int64_t rows, int64_t c);
}  // namespace cpu

}  // namespace mlai::kernels
