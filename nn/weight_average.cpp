// Exponential moving average of weights (see weight_average.h).
#include "nn/weight_average.h"

#include <stdexcept>

#include "tensor/fused_ops.h"

namespace mlai::nn {

WeightAverage::WeightAverage(Module& model, double decay) : decay_(decay) {
  if (!(decay > 0 && decay < 1))
    throw std::invalid_argument("weight average: decay must be in (0, 1), got " +
                                std::to_string(decay));
  for (auto& [n, t] : model.named_tensors()) avg_.emplace_back(n, t->clone());
}

void WeightAverage::update(Module& model) { update(model, decay_); }

void WeightAverage::update(Module& model, double decay) {
  const auto cur = model.named_tensors();
  if (cur.size() != avg_.size())
    throw std::logic_error("weight average: the model has " + std::to_string(cur.size()) +
                           " tensors, the average " + std::to_string(avg_.size()));
  std::vector<Tensor> a, c;
  for (size_t i = 0; i < cur.size(); ++i) {
    Tensor& mine = avg_[i].second;
    if (updates_ == 0 || mine.dtype() != DType::kFloat32) {
      mine.copy_from(*cur[i].second);  // the first update, and integer buffers: a copy
    } else {
      a.push_back(mine);
      c.push_back(*cur[i].second);
    }
  }
  tensor::ema_update_(a, c, decay);
  ++updates_;
}

void WeightAverage::swap(Module& model) {
  const auto cur = model.named_tensors();
  for (size_t i = 0; i < cur.size(); ++i) {
    Tensor held = avg_[i].second.clone();
    avg_[i].second.copy_from(*cur[i].second);
    cur[i].second->copy_from(held);
  }
  model.refresh_working_parameters();
}

void WeightAverage::copy_to(Module& model) {
  const auto cur = model.named_tensors();
  for (size_t i = 0; i < cur.size(); ++i) cur[i].second->copy_from(avg_[i].second);
  model.refresh_working_parameters();
}

void WeightAverage::copy_from(Module& model) {
  const auto cur = model.named_tensors();
  for (size_t i = 0; i < cur.size(); ++i) avg_[i].second.copy_from(*cur[i].second);
}

std::vector<std::pair<std::string, Tensor*>> WeightAverage::named() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [n, t] : avg_) out.emplace_back(n, &t);
  return out;
}

}  // namespace mlai::nn
