// Batch normalisation over NHWC activations seen as [rows = n*h*w, c] (per-channel statistics
// over rows), PyTorch semantics: training normalises with the batch mean and biased variance,
// and updates running_mean/var with momentum using the unbiased variance; evaluation uses the
// running statistics. Training saves mean and inv_std (1/sqrt(var + eps)) for backward:
// backward needs only those, x, gamma and dy.
// ResNet's epilogue can be fused in: y = act(bn(x) + z), with z (the residual, x's shape) and
// the activation (relu, or MobileNet's relu6) each optional; backward then takes y (the
// activation's mask: 0 < y < cap) and writes dz, the masked dy.
// Plain batch norm on CUDA is cuDNN's (tensor/cudnn_ops.h); the fused one is these kernels.
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/common.h"

namespace mlai::kernels {

// The activation fused at the end: none, relu, or relu6 (torch's ReLU6, min(max(v, 0), 6)). It
// converts from bool (relu or none), the flag of the call sites that came before relu6.
struct BnAct {
  enum Kind : uint8_t { kNone, kRelu, kRelu6 };
  Kind kind = kNone;
  constexpr BnAct(bool relu = false) : kind(relu ? kRelu : kNone) {}  // NOLINT: from bool
  constexpr BnAct(Kind k) : kind(k) {}                                // NOLINT
  constexpr explicit operator bool() const { return kind != kNone; }
  // The output's upper bound (the mask's: a gradient passes where 0 < y < cap).
  constexpr float cap() const {
    return kind == kRelu6 ? 6.0f : std::numeric_limits<float>::infinity();
  }
};

namespace cpu {
// Statistics in acc_t<T> (fp32 for half inputs); gamma/beta/running/saved are acc_t<T>.
template <class T>
void batchnorm_forward_train(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,
                             acc_t<T>* running_mean, acc_t<T>* running_var, acc_t<T>* save_mean,
                             acc_t<T>* save_inv_std, int64_t rows, int64_t c, double momentum,
                             double eps, const T* z = nullptr, BnAct act = {});
template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z = nullptr,
                            BnAct act = {});
// dx (overwritten), dgamma and dbeta (overwritten) for the training-mode forward. y: the fused
// forward's output when it applied an activation (else null), whose mask passes 0 < y < y_cap;
// dz (may be null): the gradient of z.
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y = nullptr, T* dz = nullptr,
                        float y_cap = std::numeric_limits<float>::infinity());
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
                             double eps, const T* z, BnAct act, void* scratch, StreamHandle stream);
template <class T>
void batchnorm_forward_eval(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta,
                            const acc_t<T>* running_mean, const acc_t<T>* running_var, T* y,
                            int64_t rows, int64_t c, double eps, const T* z, BnAct act,
                            void* scratch, StreamHandle stream);
template <class T>
void batchnorm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* save_mean,
                        const acc_t<T>* save_inv_std, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,
                        int64_t rows, int64_t c, const T* y, T* dz, float y_cap, void* scratch,
                        StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
