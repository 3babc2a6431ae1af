// Fused softmax cross-entropy over rows of logits (rows x classes), with optional label
// smoothing (PyTorch semantics: target = (1 - eps) * onehot + eps / classes).
// Forward writes each row's loss and its log-sum-exp (kept for backward), both in acc_t<T>:
// fp16/bf16 logits give an fp32 loss. Backward writes
//   dlogits = dloss[0] * scale * (softmax(logits) - target)
// where dloss is a device (or host, for cpu) pointer to the upstream gradient of the reduced
// loss, so no host sync is needed, and scale is 1/rows for a mean.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

#define MLAI_SOFTMAX_XENT_DECLS(...)                                                          \
  template <class T>                                                                          \
  void softmax_xent_forward(const T* logits, const int64_t* labels, int64_t rows,             \
                            int64_t classes, double label_smoothing, acc_t<T>* loss_rows,     \
                            acc_t<T>* lse_rows __VA_ARGS__);                                  \
  template <class T>                                                                          \
  void softmax_xent_backward(const T* logits, const int64_t* labels, const acc_t<T>* lse_rows, \
                             const acc_t<T>* dloss, double scale, int64_t rows, int64_t classes, \
                             double label_smoothing, T* dlogits __VA_ARGS__);

namespace cpu {
MLAI_SOFTMAX_XENT_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_SOFTMAX_XENT_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_SOFTMAX_XENT_DECLS

}  // namespace mlai::kernels
