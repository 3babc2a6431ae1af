// Per-step TensorBoard scalars without a host sync (see step_log.h).
#include "nn/step_log.h"

#include <cmath>

namespace mlai::nn {

using tensor::DType;
using tensor::Tensor;

StepScalars::~StepScalars() {
  try {
    for (Pending& p : pending_) p.landed.synchronize();
  } catch (...) {  // a broken device: nothing to protect any more
  }
}

void StepScalars::record(int64_t step, const Tensor& loss, double lr, const Tensor& grad_sq) {
  if (tb_ == nullptr) return;
  write_landed(false);
  const Tensor value = loss.dtype() == DType::kFloat32 ? loss : loss.to(DType::kFloat32);
  const Tensor norm = grad_sq.defined() ? grad_sq.reshape({}) : Tensor();
  Pending p{step, lr, io::unix_time_now(), Tensor(), Tensor(), tensor::Event()};
  if (!dev_.is_cuda()) {
    p.host = value.clone();  // the CPU: nothing to wait for
    if (norm.defined()) p.host_norm = norm.clone();
  } else {
    auto pinned = [&] {
      if (spare_.empty()) return Tensor::empty({}, DType::kFloat32, tensor::Device::cpu(), /*pinned=*/true);
      Tensor t = std::move(spare_.back());
      spare_.pop_back();
      return t;
    };
    p.host = pinned();
    p.host.copy_from(value, /*async=*/true);
    if (norm.defined()) {
      p.host_norm = pinned();
      p.host_norm.copy_from(norm, /*async=*/true);
    }
    p.landed = tensor::Event(dev_);
    p.landed.record(tensor::current_stream(dev_));
  }
  pending_.push_back(std::move(p));
}

void StepScalars::flush() {
  if (tb_ == nullptr) return;
  write_landed(true);
  tb_->flush();
}

void StepScalars::write_landed(bool wait) {
  // In step order: stop at the first copy still in flight unless waiting.
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    if (dev_.is_cuda()) {
      if (wait) {
        p.landed.synchronize();
      } else if (!p.landed.query()) {
        break;
      }
    }
    tb_->add_scalar("train/loss_step", static_cast<float>(p.host.item()), p.step, p.wall_time);
    tb_->add_scalar("train/lr_step", static_cast<float>(p.lr), p.step, p.wall_time);
    if (p.host_norm.defined())
      tb_->add_scalar("train/grad_norm_step", static_cast<float>(std::sqrt(p.host_norm.item())),
                      p.step, p.wall_time);
    if (dev_.is_cuda()) {
      spare_.push_back(std::move(p.host));
      if (p.host_norm.defined()) spare_.push_back(std::move(p.host_norm));
    }
    pending_.pop_front();
  }
}

}  // namespace mlai::nn
