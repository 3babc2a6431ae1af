// Precision flags and the loss scaler (see amp.h).
#include "nn/amp.h"

#include <stdexcept>

#include "tensor/ops.h"

namespace mlai::nn {

using tensor::DType;
using tensor::Tensor;

Precision parse_precision(const std::string& s) {
  if (s == "32" || s == "32-true") return Precision::kFloat32;
  if (s == "16" || s == "16-mixed") return Precision::kFloat16;
  if (s == "bf16" || s == "bf16-mixed") return Precision::kBFloat16;
  throw std::invalid_argument("--precision " + s + ": expected 32, 16 or bf16 (or Lightning's "
                              "32-true, 16-mixed, bf16-mixed)");
}

DType compute_dtype(Precision p) {
  switch (p) {
    case Precision::kFloat16: return DType::kFloat16;
    case Precision::kBFloat16: return DType::kBFloat16;
    default: return DType::kFloat32;
  }
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFloat16: return "16";
    case Precision::kBFloat16: return "bf16";
    default: return "32";
  }
}

GradScaler::GradScaler(const tensor::Device& dev, bool enabled, const ScalerOptions& opt)
    : enabled_(enabled), opt_(opt) {
  if (opt.init_scale <= 0 || opt.growth_factor <= 1 || opt.backoff_factor <= 0 ||
      opt.backoff_factor >= 1 || opt.growth_interval < 1)
    throw std::invalid_argument("loss scaler: bad options (scale > 0, growth > 1, 0 < backoff < "
                                "1, interval >= 1)");
  const double s = enabled ? opt.init_scale : 1.0;
  scale_ = Tensor::from_vector(std::vector<float>{static_cast<float>(s), static_cast<float>(1.0 / s)},
                               {2})
               .to(dev);
  seed_ = scale_.slice(0, 1).reshape({});
  tracker_ = Tensor::zeros({1}, DType::kInt32, dev);
  skipped_ = Tensor::zeros({1}, DType::kInt64, dev);
  if (enabled) {
    inv_scale_ = scale_.slice(1, 2);
    found_inf_ = Tensor::zeros({1}, DType::kFloat32, dev);
  }
}

void GradScaler::check(std::vector<Tensor>& grads) {
  if (!enabled_) return;
  tensor::unscale_check_finite_(grads, Tensor(), found_inf_);
}

void GradScaler::update() {
  if (!enabled_) return;
  tensor::update_loss_scale_(scale_, tracker_, skipped_, found_inf_, opt_.growth_factor,
                             opt_.backoff_factor, opt_.growth_interval);
}

double GradScaler::scale() { return scale_.to(tensor::Device::cpu()).data<float>()[0]; }

int64_t GradScaler::skipped_steps() {
  return skipped_.to(tensor::Device::cpu()).data<int64_t>()[0];
}

std::vector<std::pair<std::string, Tensor*>> GradScaler::state() {
  return {{"scale", &scale_}, {"growth_tracker", &tracker_}, {"skipped_steps", &skipped_}};
}

void scaled_step(Optimizer& opt, GradScaler& scaler, float grad_scale, int64_t global_step,
                 double clip_norm, Tensor* grad_sq_out,
                 const std::function<void(Tensor&)>& sum_over_ranks) {
  std::vector<Tensor> grads;
  if (scaler.enabled() || clip_norm > 0 || grad_sq_out) grads = opt.gradients();
  Tensor skip_if, factor;
  if (scaler.enabled()) {
    scaler.check(grads);
    if (sum_over_ranks) {                // any rank's overflow skips the step everywhere
      Tensor flag = scaler.found_inf();  // (a handle on the scaler's flag)
      sum_over_ranks(flag);
    }
    opt.set_step_count(global_step, scaler.skipped_counter());  // (read on the device)
    skip_if = scaler.found_inf();
    factor = scaler.inv_scale();
  }
  Tensor sq;
  if (clip_norm > 0 || grad_sq_out) {
    if (!grads.empty()) {
      sq = tensor::squared_norm(grads);
    } else if (sum_over_ranks) {  // (a rank that owns no gradient still joins the sum)
      sq = Tensor::zeros({}, tensor::DType::kFloat32, opt.parameters().at(0).second.device());
    }
    if (sq.defined() && sum_over_ranks) sum_over_ranks(sq);
  }
  if (grad_sq_out && sq.defined()) {  // (read before update() changes the scale: stream order)
    Tensor u = tensor::scale(sq.reshape({1}), static_cast<double>(grad_scale) * grad_scale);
    if (scaler.enabled()) u = tensor::mul(tensor::mul(u, scaler.inv_scale()), scaler.inv_scale());
    *grad_sq_out = u;
  }
  if (clip_norm > 0 && sq.defined())
    factor = tensor::clip_norm_factor(sq, factor, grad_scale, clip_norm);
  opt.step(grad_scale, skip_if, factor);
  scaler.update();  // nothing when disabled
}

}  // namespace mlai::nn
