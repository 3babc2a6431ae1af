// Fused softmax cross-entropy over rows of logits (rows x classes), with optional label
// smoothing (PyTorch semantics: target = (1 - eps) * onehot + eps / classes) and optional
// class weights (PyTorch's weight=): with weights w (classes values; null: none) a row's
// loss is (1 - eps) w[y] (lse - z[y]) + eps / classes * sum_c w[c] (lse - z[c]), and
// weight_rows gets w[y], the row's share of the weighted mean's denominator (PyTorch divides
// the summed loss by sum_i w[y_i]); backward then takes weight_sum = sum_c w[c] and gives
//   dlogits = dloss[0] * scale * (softmax * ((1 - eps) w[y] + eps / classes * weight_sum)
//             - (1 - eps) w[y] onehot - eps / classes * w).
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
                            int64_t classes, double label_smoothing, const acc_t<T>* weights, \
                            acc_t<T>* loss_rows, acc_t<T>* lse_rows,                          \
                            acc_t<T>* weight_rows __VA_ARGS__);                               \
  template <class T>                                                                          \
  void softmax_xent_backward(const T* logits, const int64_t* labels, const acc_t<T>* lse_rows, \
                             const acc_t<T>* dloss, double scale, int64_t rows, int64_t classes, \
                             double label_smoothing, const acc_t<T>* weights,                 \
                             double weight_sum, T* dlogits __VA_ARGS__);

namespace cpu {
MLAI_SOFTMAX_XENT_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_SOFTMAX_XENT_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_SOFTMAX_XENT_DECLS

}  // namespace mlai::kernels
