// Float64 references that each benchmark checks its op against, once, before timing it. They
// take tensors on any device (results are copied to the host) and return "" when the result is
// within `tol`, else a one-line message with the error found.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace mlai::bench {

// Relative tolerance for a result stored in `dt` (its rounding, plus fp32 accumulation).
double default_tol(tensor::DType dt);

// c = a @ b: compares a few whole rows of c (the first, the last and some in between) with a
// float64 product of the same inputs; relative L2 error.
std::string check_gemm(const tensor::Tensor& a, const tensor::Tensor& b, const tensor::Tensor& c,
                       double tol);

// out = a + b (b defined) or relu(a) (b undefined), every element; relative L2 error.
std::string check_elementwise(const tensor::Tensor& a, const tensor::Tensor& b,
                              const tensor::Tensor& out, double tol);

// out (a scalar) = sum(x): |out - ref| / sum|x| (the error a well-conditioned sum can have).
std::string check_sum(const tensor::Tensor& x, const tensor::Tensor& out, double tol);

// loss[r] = logsumexp(logits[r]) - logits[r, labels[r]], no label smoothing.
std::string check_xent_forward(const tensor::Tensor& logits, const tensor::Tensor& labels,
                               const tensor::Tensor& loss, double tol);
// dlogits = scale * (softmax(logits) - onehot(labels)); scale includes the upstream gradient.
std::string check_xent_backward(const tensor::Tensor& logits, const tensor::Tensor& labels,
                                double scale, const tensor::Tensor& dlogits, double tol);

// out = cast(x, out.dtype()), bit for bit equal to the CPU twin's cast.
std::string check_cast(const tensor::Tensor& x, const tensor::Tensor& out);

}  // namespace mlai::bench
