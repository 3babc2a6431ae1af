// The kernels of a Vision Transformer (torchvision's VisionTransformer) that ResNets did not
// need: layer norm over the last dimension, GELU (the exact, erf form: torch.nn.GELU()), a
// row softmax and its backward (the attention probabilities), the token embedding (the class
// token in front of the patches, positions added) and a strided copy of token rows (the class
// token out, the patches' gradient back). The attention's products are gemm_batched
// (kernels/gemm.h).
// Each CUDA entry point (namespace cuda) has a CPU twin (namespace cpu) with the same arguments
// but the stream. T is float, double, Half or BFloat16; arithmetic is done in acc_t<T>.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

#define MLAI_TRANSFORMER_DECLS(...)                                                                \
  /* Each row of `cols`: y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps) with */  \
  /* the biased variance (torch.nn.LayerNorm); mean and rstd per row kept for backward. gamma */   \
  /* and beta may be null (elementwise_affine=False). */                                           \
  template <class T>                                                                               \
  void layer_norm_forward(const T* x, const acc_t<T>* gamma, const acc_t<T>* beta, T* y,           \
                          acc_t<T>* mean, acc_t<T>* rstd, int64_t rows, int64_t cols,              \
                          double eps __VA_ARGS__);                                                 \
  /* dx (overwritten); dgamma and dbeta (overwritten, cols each; may be null: no affine). */       \
  template <class T>                                                                               \
  void layer_norm_backward(const T* x, const T* dy, const acc_t<T>* gamma, const acc_t<T>* mean,   \
                           const acc_t<T>* rstd, T* dx, acc_t<T>* dgamma, acc_t<T>* dbeta,         \
                           int64_t rows, int64_t cols __VA_ARGS__);                                \
  /* y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */                                                \
  template <class T>                                                                               \
  void gelu(const T* x, T* y, int64_t n __VA_ARGS__);                                              \
  /* dx = dy * (Phi(x) + x * phi(x)), phi the standard normal density */                           \
  template <class T>                                                                               \
  void gelu_backward(const T* dy, const T* x, T* dx, int64_t n __VA_ARGS__);                       \
  /* Each row of `cols`: y = softmax(x) (max subtracted first). y may be x. */                     \
  template <class T>                                                                               \
  void softmax_rows(const T* x, T* y, int64_t rows, int64_t cols __VA_ARGS__);                     \
  /* dx = scale * y * (dy - sum(dy * y)) per row: the gradient of softmax(s) times scale (the */   \
  /* attention's 1/sqrt(head_dim), folded in). dx may be dy. */                                    \
  template <class T>                                                                               \
  void softmax_rows_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols,           \
                             double scale __VA_ARGS__);                                            \
  /* out [n, 1 + patches, e]: out[b, 0] = cls + pos[0], out[b, 1 + p] = x[b, p] + pos[1 + p], */   \
  /* x [n, patches, e], cls [e], pos [1 + patches, e]. */                                          \
  template <class T>                                                                               \
  void embed_tokens(const T* x, const T* cls, const T* pos, T* out, int64_t n, int64_t patches,    \
                    int64_t e __VA_ARGS__);                                                        \
  /* For b < n: dst[b, dst_at + t] = src[b, src_at + t] for t < count, rows of e elements, src */  \
  /* holding src_tokens rows per sample and dst dst_tokens. Other rows of dst are untouched. */    \
  template <class T>                                                                               \
  void copy_tokens(const T* src, int64_t src_tokens, int64_t src_at, T* dst, int64_t dst_tokens,   \
                   int64_t dst_at, int64_t count, int64_t n, int64_t e __VA_ARGS__);

namespace cpu {
MLAI_TRANSFORMER_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_TRANSFORMER_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_TRANSFORMER_DECLS

}  // namespace mlai::kernels
