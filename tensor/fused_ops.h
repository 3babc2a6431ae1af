// Fused multi-tensor and random ops on tensors: dropout, and the optimizer steps of
// kernels/optim.h over lists of tensors (a few kernel launches for a whole model).
#pragma once

#include <utility>
#include <vector>

#include "kernels/augment.h"
#include "kernels/optim.h"
#include "tensor/tensor.h"

namespace mlai::tensor {

// y = x * keep / (1 - p), keep ~ Bernoulli(1 - p) from gen; returns y and the uint8 keep mask.
std::pair<Tensor, Tensor> dropout(const Tensor& x, double p, Generator& gen);
Tensor dropout_backward(const Tensor& dy, const Tensor& mask, double scale);

// uint8 [B, H, W, C] pixels -> `dt` [B, H, W, C], random crop/flip per kernels/augment.h and
// normalisation; ids (int64 [B]) are the samples' dataset indices (their random decisions).
Tensor augment_normalize(const Tensor& pixels, const Tensor& ids, const kernels::AugmentParams& p,
                         DType dt);

// confusion [classes, classes] int64 += counts of (target, predicted) pairs.
void confusion_update_(const Tensor& predicted, const Tensor& target, Tensor& confusion);

// params, grads and state: float32 tensors on one device, matched by position.
// skip_if: undefined, or a float32 scalar on that device (non-zero skips the step).
void sgd_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& momentum, const kernels::SgdArgs& args,
               const Tensor& skip_if = Tensor());
void adam_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                const kernels::AdamArgs& args, const Tensor& skip_if = Tensor());

}  // namespace mlai::tensor
