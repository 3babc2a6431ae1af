// The ops of a Vision Transformer on tensors (kernels/transformer.h, kernels/gemm.h's batched
// GEMM): layer norm over the last dimension, GELU, multi-head self-attention from the packed
// q, k, v projection, the token embedding and picking one token. Dtypes: float32, float64,
// float16, bfloat16; layer norm's gamma, beta and saved statistics are float32 for the half
// types (as batch norm's), x's dtype otherwise. All tensors of a call on one device.
#pragma once

#include <utility>

#include "tensor/tensor.h"

namespace mlai::tensor {

// torch.nn.LayerNorm over x's last dimension (size c): gamma and beta [c] or both undefined.
// Returns y, mean and rstd (1 / sqrt(biased var + eps)), one per row, for backward.
struct LayerNormOut {
  Tensor y, mean, rstd;
};
LayerNormOut layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);
struct LayerNormGrads {
  Tensor dx, dgamma, dbeta;  // dgamma, dbeta undefined unless want_params
};
LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                   const Tensor& mean, const Tensor& rstd, bool want_params);

// torch.nn.GELU() (approximate='none'): x Phi(x).
Tensor gelu(const Tensor& x);
Tensor gelu_backward(const Tensor& dy, const Tensor& x);

// Scaled dot-product self-attention over `heads` heads (torch.nn.MultiheadAttention's core,
// after in_proj and before out_proj). qkv [n, t, 3 e]: q, k and v side by side, head h taking
// columns [h d, (h + 1) d) of each (d = e / heads). Returns out [n, t, e] (the heads side by
// side again) and the probabilities softmax(q k^T / sqrt(d)) [n, heads, t, t] for backward.
std::pair<Tensor, Tensor> self_attention(const Tensor& qkv, int64_t heads);
// dqkv [n, t, 3 e] from dout [n, t, e].
Tensor self_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                               int64_t heads);

// The encoder's input: [class token; patches] + positions. patches [n, p, e], cls [1, 1, e],
// pos [1, p + 1, e] -> [n, p + 1, e].
Tensor embed_tokens(const Tensor& patches, const Tensor& cls, const Tensor& pos);
struct EmbedGrads {
  Tensor dpatches, dcls, dpos;
};
EmbedGrads embed_tokens_backward(const Tensor& dout);

// x[:, index] of x [n, t, e] -> [n, e]; its backward puts dy [n, e] there in zeros [n, t, e].
Tensor select_token(const Tensor& x, int64_t index);
Tensor select_token_backward(const Tensor& dy, int64_t tokens, int64_t index);

}  // namespace mlai::tensor
