// Tensor-level operations: check shapes, dtypes and devices, allocate the result, and dispatch
// to the CPU or CUDA kernel on the current stream. No autograd here (see autograd/).
#pragma once

#include <utility>

#include "tensor/tensor.h"

namespace mlai::tensor {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);  // a / b, elementwise
Tensor scale(const Tensor& x, double alpha);
void axpy_(double alpha, const Tensor& x, Tensor& y);  // y += alpha * x, in place
Tensor relu(const Tensor& x);
Tensor relu_backward(const Tensor& dy, const Tensor& x);
// torch's ReLU6: min(max(x, 0), 6); the backward passes dy where 0 < x < 6 (x or the output).
Tensor relu6(const Tensor& x);
Tensor relu6_backward(const Tensor& dy, const Tensor& x);
// x: [rows, cols], bias: [cols]; y = x + bias (then relu when apply_relu).
Tensor bias_act(const Tensor& x, const Tensor& bias, bool apply_relu);

Tensor sum(const Tensor& x, double scale = 1.0);  // scalar (shape {})
Tensor mean(const Tensor& x);
// Reduce over `dim`; the result drops it unless keepdim.
Tensor sum_dim(const Tensor& x, int dim, bool keepdim = false, double scale = 1.0);
Tensor mean_dim(const Tensor& x, int dim, bool keepdim = false);
std::pair<Tensor, Tensor> max_dim(const Tensor& x, int dim);  // values, int64 indices
// The backward of sum_dim: g (shape with `dim` dropped or kept as 1) repeated along `dim` to
// `shape`, times scale. With dim = -1 on a scalar g, fills all of `shape` (backward of sum).
Tensor broadcast_dim(const Tensor& g, const Shape& shape, int dim, double scale = 1.0);

// Fused softmax cross-entropy. logits [rows, classes] (any float dtype), labels int64 [rows].
// Returns per-row losses and log-sum-exps (fp32, or fp64 for fp64 logits). With class
// `weights` ([classes], on the logits' device; cast to the loss dtype), the rows are PyTorch's
// weighted numerators and *weight_rows gets each row's w[label] (kernels/softmax_xent.h).
std::pair<Tensor, Tensor> softmax_xent_forward(const Tensor& logits, const Tensor& labels,
                                               double label_smoothing,
                                               const Tensor& weights = Tensor(),
                                               Tensor* weight_rows = nullptr);
// dloss: scalar upstream gradient (same device as logits, dtype of the loss rows); with
// weights, weight_sum is their sum.
Tensor softmax_xent_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                             const Tensor& dloss, double scale, double label_smoothing,
                             const Tensor& weights = Tensor(), double weight_sum = 0.0);

// C = op(A) @ op(B): A [m, k] (or [k, m] with trans_a), B [k, n] (or [n, k] with trans_b).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// C = alpha * op(A) @ op(B) + beta * C, into an existing C.
void gemm_(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, double alpha,
           double beta);

Tensor cast(const Tensor& x, DType dt);
// out = x * alpha, multiplied in float and rounded once into out's dtype, for an existing
// `out` of x's size on x's device: float32 to float16/bfloat16 or back (data-parallel
// gradient compression, --ddp-comm-hook).
void scale_cast_(const Tensor& x, Tensor& out, double alpha);
void fill_(Tensor& t, double value);
void uniform_(Tensor& t, double lo, double hi, Generator& gen);
void normal_(Tensor& t, double mean, double stddev, Generator& gen);

// Multi-tensor unscale and check-finite (AMP): every tensor *= inv_scale[0]; found_inf[0] set
// to 1 when any value is inf/nan. inv_scale and found_inf are float32 scalars on the tensors'
// device; an undefined inv_scale only checks. Tensors may mix float32/float16/bfloat16.
void unscale_check_finite_(std::vector<Tensor>& tensors, const Tensor& inv_scale,
                           Tensor& found_inf);
// The loss scaler's update on the device (kernels/amp.h update_loss_scale): scale float32[2]
// {scale, 1/scale}, growth_tracker int32[1], skipped int64[1], found_inf float32[1] (reset).
void update_loss_scale_(Tensor& scale, Tensor& growth_tracker, Tensor& skipped,
                        Tensor& found_inf, double growth, double backoff, int64_t interval);

// Gradient-norm clipping without a host sync: the squared 2-norm of all `grads` (any float
// dtypes; a few multi-tensor launches, squares summed in double) into a float32 scalar on
// their device, then (kernels/amp.h clip_norm_factor) the factor the optimizer should read
// them with.
Tensor squared_norm(const std::vector<Tensor>& grads);
Tensor clip_norm_factor(const Tensor& sum_sq, const Tensor& inv_scale, double grad_scale,
                        double max_norm);

// Largest relative error max|a-b| / max(max|b|, tiny), over all elements (test helper).
double max_rel_error(const Tensor& a, const Tensor& b);

}  // namespace mlai::tensor
