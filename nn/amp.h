// Mixed precision: --precision parsing and the dynamic loss scaler.
//
// GradScaler follows torch.cuda.amp.GradScaler: the loss is multiplied by the scale (init 2^16)
// before backward; after backward (and the gradient allreduce) one multi-tensor pass checks
// every gradient for inf/nan into a device flag; the optimizer reads gradients times 1/scale
// (no separate unscale pass, no fp16 underflow) and skips the whole step on the device when
// the flag is set; update() then halves the scale on overflow or doubles it after
// growth_interval (2000) clean steps in a row. Everything stays on the device: no host sync
// in the step. The optimizer's step number (Adam's bias correction, SGD's first momentum step)
// is the host's count of steps tried less the device's count of steps skipped, which the
// optimizer's kernels read when they run (PyTorch's "capturable" optimizers keep their step on
// the device for the same reason): the host never waits to learn whether a step was skipped.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "nn/optim.h"
#include "tensor/tensor.h"

namespace mlai::nn {

enum class Precision { kFloat32, kFloat16, kBFloat16 };

// "32" (or "32-true"), "16" ("16-mixed"), "bf16" ("bf16-mixed"); anything else is an error
// naming --precision and the choices.
Precision parse_precision(const std::string& s);
tensor::DType compute_dtype(Precision p);
const char* precision_name(Precision p);  // "32", "16", "bf16"

struct ScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  // enabled false (fp32, bf16): scale stays 1 and nothing is checked or skipped.
  GradScaler(const tensor::Device& dev, bool enabled, const ScalerOptions& opt = {});
  bool enabled() const { return enabled_; }

  // The seed for backward (a float32 scalar on the device): the loss scale, or 1.
  const tensor::Tensor& seed() const { return seed_; }
  // 1/scale on the device (undefined when disabled): the optimizer's inv_scale.
  const tensor::Tensor& inv_scale() const { return inv_scale_; }
  // The device flag the check sets (undefined when disabled): the optimizer's skip_if.
  const tensor::Tensor& found_inf() const { return found_inf_; }

  // Checks the (still scaled) gradients for inf/nan into found_inf().
  void check(std::vector<tensor::Tensor>& grads);
  // Scale update for this step (after the optimizer step).
  void update();
  // The device's count of skipped steps (int64 [1]; zero and never changed when disabled):
  // what Optimizer::set_step_count subtracts on the device.
  const tensor::Tensor& skipped_counter() const { return skipped_; }

  // Host reads (a device sync): the current scale and all skipped steps so far.
  double scale();
  int64_t skipped_steps();

  // For checkpoints: "scale" (float32 [2]: scale, 1/scale), "growth_tracker" (int32 [1]),
  // "skipped_steps" (int64 [1]); loading writes into them in place.
  std::vector<std::pair<std::string, tensor::Tensor*>> state();

 private:
  bool enabled_;
  ScalerOptions opt_;
  tensor::Tensor scale_, seed_, inv_scale_, tracker_, skipped_, found_inf_;
};

// The optimizer part of a training step under the scaler (what Trainer runs after backward
// and the gradient allreduce): checks every gradient the optimizer will read, sets its step
// count to the steps actually taken before this one (global_step less the device's count of
// skipped steps, which the optimizer's kernels subtract: Adam's bias correction and SGD's first
// momentum step as in PyTorch, where a skipped step never reaches the optimizer), steps with
// 1/scale folded in (the device skips it on overflow) and updates the scale. Without scaling
// (fp32, bf16) it is opt.step(grad_scale).
// clip_norm > 0: gradient-norm clipping of the true (averaged, unscaled) gradients, as
// clip_grad_norm_ after GradScaler.unscale_: the clip factor joins 1/scale in the optimizer's
// read, computed on the device (no host sync, no extra pass writing the gradients).
// grad_sq_out non-null: receives the squared 2-norm of the true gradients, as above, before
// clipping (float32 [1] on the device; inf/nan when the step is skipped for them).
// sum_over_ranks (ZeRO stage 2, where each rank holds only the gradients it owns): sums a
// device tensor over the ranks in place; the inf flag and the squared norm of this rank's
// gradients go through it, so every rank skips and clips alike (one or two tiny collectives,
// no host sync on NCCL).
void scaled_step(Optimizer& opt, GradScaler& scaler, float grad_scale, int64_t global_step,
                 double clip_norm = 0, tensor::Tensor* grad_sq_out = nullptr,
                 const std::function<void(tensor::Tensor&)>& sum_over_ranks = {});

}  // namespace mlai::nn
