// Differentiable ops. Each family's forward and backward live together in one file:
// elementwise.cpp, linear.cpp, reduce.cpp, loss.cpp, shape.cpp, conv.cpp, batchnorm.cpp, ...
#pragma once

#include <functional>

#include "autograd/variable.h"
#include "kernels/batchnorm.h"

namespace mlai::autograd {

// elementwise.cpp
Variable add(const Variable& a, const Variable& b);
Variable sub(const Variable& a, const Variable& b);
Variable mul(const Variable& a, const Variable& b);
Variable scale(const Variable& x, double alpha);
Variable relu(const Variable& x);
// min(max(x, 0), 6): torch's ReLU6 (MobileNet).
Variable relu6(const Variable& x);
// x [rows, cols] + bias [cols], then relu when apply_relu (one fused kernel each way).
Variable bias_act(const Variable& x, const Variable& bias, bool apply_relu);

// linear.cpp
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false);
// y = x @ weight^T + bias (bias may be undefined), relu fused when apply_relu.
// x [batch, in], weight [out, in], bias [out].
Variable linear(const Variable& x, const Variable& weight, const Variable& bias,
                bool apply_relu = false);

// reduce.cpp
Variable sum(const Variable& x);
Variable mean(const Variable& x);
Variable sum_dim(const Variable& x, int dim, bool keepdim = false);
Variable mean_dim(const Variable& x, int dim, bool keepdim = false);

// loss.cpp: fused softmax cross-entropy, mean over rows; labels int64 [rows] (no gradient).
// Returns a scalar in fp32 (fp64 for fp64 logits).
// PyTorch's CrossEntropyLoss(weight=...): class weights ([classes] floats on the logits'
// device) and their sum (kept on the host, so backward needs no device read).
struct ClassWeights {
  Tensor values;
  double sum = 0;
};
// With weights, the mean is weighted as PyTorch's: sum_i loss_i / sum_i w[y_i].
Variable cross_entropy(const Variable& logits, const Tensor& labels, double label_smoothing = 0.0,
                       const ClassWeights* weights = nullptr);

// dropout.cpp: zeroes each element with probability p, scales the rest by 1/(1-p).
Variable dropout(const Variable& x, double p, tensor::Generator& gen);

// conv.cpp: NHWC activations, OHWI filters ([c_out, kh, kw, c_in / groups]); bias may be
// undefined; groups as torch.nn.Conv2d's (c_in = c_out = groups: depthwise).
Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, int64_t stride,
                int64_t pad, int64_t groups = 1);
Variable maxpool2d(const Variable& x, int64_t kernel, int64_t stride, int64_t pad);
// [n, h, w, c] -> [n, c]: AdaptiveAvgPool2d(1) followed by flatten.
Variable global_avgpool(const Variable& x);

// batchnorm.cpp: per-channel (last dimension) normalisation. Training uses batch statistics
// and updates the running ones in place; evaluation uses the running statistics.
Variable batchnorm(const Variable& x, const Variable& gamma, const Variable& beta,
                   Tensor& running_mean, Tensor& running_var, bool training, double momentum,
                   double eps);

// batchnorm() and ResNet's epilogue in one op: act(bn(x) + residual), the residual (x's shape)
// may be undefined and the activation (relu or relu6; from a bool: relu or none) off. One pass
// instead of three each way.
Variable batchnorm_act(const Variable& x, const Variable& gamma, const Variable& beta,
                       const Variable& residual, kernels::BnAct act, Tensor& running_mean,
                       Tensor& running_var, bool training, double momentum, double eps);
// The activation alone, unfused: relu(x), relu6(x) or x.
Variable activate(const Variable& x, kernels::BnAct act);

// sync_batchnorm.cpp: cross-rank batch norm for data parallelism (PyTorch's SyncBatchNorm),
// training mode: the statistics are those of the global batch (`world` ranks of x.rows each; the
// training loader gives every rank the same batch size), combined by `sum_over_ranks` (an in-place
// allreduce of a small float64 / parameter-dtype tensor) once in forward and once in backward.
// Running statistics are updated from the global ones; dgamma and dbeta are the rank's own (the DDP
// reducer averages them, as PyTorch does). With world 1 it is batchnorm() in training mode.
using SumOverRanks = std::function<void(Tensor&)>;
Variable sync_batchnorm(const Variable& x, const Variable& gamma, const Variable& beta,
                        Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                        int world, const SumOverRanks& sum_over_ranks);

// flops.cpp: the floating-point operations of the matrix products that ran (matmul, linear and
// conv2d forward, and each backward product that was computed: none for an input or a weight
// that needs no gradient), counted as torch.utils.flop_counter.FlopCounterMode counts them:
// 2 per multiply-add, nothing for bias adds, elementwise ops, normalisation, pooling or the
// loss. One process-wide count that only grows (a relaxed atomic): read it before and after
// the work to measure. Replayed CUDA graphs run no ops, so they count nothing.
int64_t flop_count();
void add_flops(int64_t flops);

// transformer.cpp (tensor/transformer_ops.h): the Vision Transformer's ops.
// torch.nn.LayerNorm over the last dimension; gamma and beta [c] or both undefined (no affine).
Variable layer_norm(const Variable& x, const Variable& gamma, const Variable& beta,
                    double eps = 1e-5);
Variable gelu(const Variable& x);  // torch.nn.GELU(): x Phi(x), the erf form
// qkv [n, t, 3 e] (q, k, v side by side) -> [n, t, e]: softmax(q k^T / sqrt(d)) v per head.
Variable self_attention(const Variable& qkv, int64_t heads);
// [class token; patches] + positions: patches [n, p, e], cls [1, 1, e], pos [1, p + 1, e].
Variable embed_tokens(const Variable& patches, const Variable& cls, const Variable& pos);
Variable select_token(const Variable& x, int64_t index);  // x[:, index] of [n, t, e]

// shape.cpp: views sharing storage with their input.
Variable reshape(const Variable& x, const Shape& shape);
Variable flatten(const Variable& x, int start_dim = 1);

}  // namespace mlai::autograd
