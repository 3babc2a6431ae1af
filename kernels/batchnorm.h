// Batch normalisation over NHWC activations seen as [rows = n*h*w, c] (per-channel statistics
// over rows), PyTorch semantics: training normalises with the batch mean and biased variance,
// and updates running_mean/var with momentum using the unbiased variance; evaluation uses the
// running statistics. Training saves mean and inv_std (1/sqrt(var + eps)) for backward:
// backward needs only those, x, gamma and dy.
// ResNet's epilogue can be fused in: y = relu(bn(x) + z), with z (the residual, x's shape) and
// the relu each optional; backward then takes y (the relu's mask) and writes dz, the masked dy.
// Plain batch norm on CUDA is cuDNN's (tensor/cudnn_ops.h); the fused one is these kernels.
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
                             double eps, const T* z = nullptr, bool relu = false);
template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z = nullptr,
                            bool relu = false);
// dx (overwritten), dgamma and dbeta (overwritten) for the training-mode forward. y: the fused
// forward's output when it applied a relu (else null); dz (may be null): the gradient of z.
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y = nullptr, T* dz = nullptr);
}  // namespace cpu

namespace cuda {
// The fused kernels (same arguments as the CPU twins above, plus a stream and device scratch of
// batchnorm_scratch_bytes(rows, c), which the caller allocates on that stream). Statistics are
// shifted sums per thread in acc_t<T>, combined in double in a fixed order: deterministic.
size_t batchnorm_scratch_bytes(int64_t rows, int64_t c);
template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps, const T* z, bool relu, void* scratch, StreamHandle stream);
template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z, bool relu,
                            void* scratch, StreamHandle stream);
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y, T* dz, void* scratch,
                        StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
