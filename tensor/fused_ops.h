// Fused multi-tensor and random ops on tensors: dropout, and the optimizer steps of
// kernels/optim.h over lists of tensors (a few kernel launches for a whole model).
#pragma once

#include <utility>
#include <vector>

#include "kernels/augment.h"
#include "kernels/auto_augment.h"
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

// dt may also be kUInt8: the crop/flip alone, rounded to uint8 pixels (no normalization; p
// must erase nothing), as the input of auto_augment.
// torchvision's TrivialAugmentWide / RandAugment / AutoAugment (kernels/auto_augment.h) on
// uint8 [B, H, W, C] pixels (C = 1 or 3) -> uint8 pixels of the same shape.
Tensor auto_augment(const Tensor& pixels, const Tensor& ids, const kernels::AutoAugmentParams& p);

// MixUp/CutMix of a [B, H, W, C] float/fp16/bf16 batch with itself rolled by one sample
// (kernels::mix_batch; p's sizes must be the batch's).
Tensor mix_batch(const Tensor& images, const kernels::MixParams& p);
// torch.roll(t, 1, 0): row b of the result is row b - 1 of t, row 0 the last.
Tensor roll_rows(const Tensor& t);

// confusion [classes, classes] int64 += counts of (target, predicted) pairs.
void confusion_update_(const Tensor& predicted, const Tensor& target, Tensor& confusion);
// hits (int64 scalar) += the rows of logits [n, classes] whose target is among the k highest
// (argmax's order: ties go to the smaller index, so k = 1 agrees with the argmax).
void topk_hits_(const Tensor& logits, const Tensor& target, int64_t k, Tensor& hits);

// params (float32 masters) and state (float32) on one device, matched by position with grads
// (float32, float16 or bfloat16; one launch family per gradient dtype). working: empty, or one
// entry per parameter, undefined or the fp16/bf16 copy (the gradient's dtype) that receives
// the updated master. inv_scale: undefined or a float32 value on the device multiplying every
// gradient (1/loss scale). skip_if: undefined, or a float32 value (non-zero skips the step).
// step_offset: undefined, or an int64 value on the device subtracted from args.step when the
// kernel runs; lr_and_step: undefined, or float64 {lr, step} on the device replacing args.lr
// and args.step when it runs (they set args.step_offset and args.lr_and_step; see
// kernels/optim.h).
void sgd_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& working, const std::vector<Tensor>& momentum,
               const kernels::SgdArgs& args, const Tensor& inv_scale = Tensor(),
               const Tensor& skip_if = Tensor(), const Tensor& step_offset = Tensor(),
               const Tensor& lr_and_step = Tensor());
void adam_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& exp_avg,
                const std::vector<Tensor>& exp_avg_sq, const kernels::AdamArgs& args,
                const Tensor& inv_scale = Tensor(), const Tensor& skip_if = Tensor(),
                const Tensor& step_offset = Tensor(), const Tensor& lr_and_step = Tensor());

// LARS and LAMB (kernels/optim.h) with the same arguments as sgd_step_ and adam_step_, and
// `scratch`: a tensor the CUDA steps keep their per-chunk norms and per-tensor ratios in,
// (re)allocated here when undefined or too small (keep it between steps: a step captured into
// a CUDA graph must not allocate); unused on the CPU.
void lars_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& momentum,
                const kernels::LarsArgs& args, Tensor* scratch, const Tensor& inv_scale = Tensor(),
                const Tensor& skip_if = Tensor(), const Tensor& step_offset = Tensor(),
                const Tensor& lr_and_step = Tensor());
void lamb_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& exp_avg,
                const std::vector<Tensor>& exp_avg_sq, const kernels::LambArgs& args,
                Tensor* scratch, const Tensor& inv_scale = Tensor(),
                const Tensor& skip_if = Tensor(), const Tensor& step_offset = Tensor(),
                const Tensor& lr_and_step = Tensor());

// avg[t] = decay * avg[t] + (1 - decay) * cur[t] for float32 tensors on one device, matched by
// position and size (kernels::ema_update: a few launches for a whole model).
void ema_update_(const std::vector<Tensor>& avg, const std::vector<Tensor>& cur, double decay);

}  // namespace mlai::tensor
