// The fully-connected layer's products with their epilogues fused. On CUDA each is one
// cuBLASLt call (kernels/gemm.h gemm_epilogue): the bias (+ relu) in the forward GEMM, the bias
// gradient in the weight-gradient GEMM. On the CPU, for float64, and where cuBLASLt has no
// algorithm, the plain GEMM followed by bias_act / sum_dim: the same results up to rounding
// (cuBLASLt adds the bias before rounding the product, the fallback after).
#pragma once

#include <cstdint>
#include <utility>

#include "tensor/tensor.h"

namespace mlai::tensor {

// y = x @ w^T + bias, then relu when relu. x [batch, in], w [out, in], bias [out] or undefined.
Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool relu);
// dw = gz^T @ x and, when want_bias, db = the column sums of gz. gz [batch, out], x [batch, in].
std::pair<Tensor, Tensor> linear_weight_grad(const Tensor& gz, const Tensor& x, bool want_bias);

// Tests and benchmarks: turn the cuBLASLt epilogues off (the fallback path) and count the
// calls that wanted one but fell back because cuBLASLt had no algorithm.
void set_gemm_epilogues(bool enabled);
int64_t gemm_epilogue_fallbacks();

}  // namespace mlai::tensor
