// Exponential moving average of weights (see weight_average.h).
#include "nn/weight_average.h"

#include <stdexcept>
#include <utility>

#include "tensor/fused_ops.h"

namespace mlai::nn {

WeightAverage::WeightAverage(Module& model, double decay, std::vector<bool> keep)
    : decay_(decay), keep_(std::move(keep)) {
  if (!(decay > 0 && decay < 1))
    throw std::invalid_argument("weight average: decay must be in (0, 1), got " +
                                std::to_string(decay));
  const auto cur = model.named_tensors();
  if (!keep_.empty() && keep_.size() != cur.size())
    throw std::logic_error("weight average: " + std::to_string(keep_.size()) +
                           " keep flags for " + std::to_string(cur.size()) + " tensors");
  for (size_t i = 0; i < cur.size(); ++i)
    avg_.emplace_back(cur[i].first, keeps(i) ? cur[i].second->clone() : Tensor());
}

std::vector<std::pair<std::string, Tensor*>> WeightAverage::model_tensors(Module& model) const {
  auto cur = model.named_tensors();
  if (cur.size() != avg_.size())
    throw std::logic_error("weight average: the model has " + std::to_string(cur.size()) +
                           " tensors, the average " + std::to_string(avg_.size()));
  for (size_t i = 0; i < cur.size(); ++i)
    if (cur[i].first != avg_[i].first)
      throw std::logic_error("weight average: the model's tensor " + std::to_string(i) + " is " +
                             cur[i].first + ", the average's " + avg_[i].first);
  return cur;
}

void WeightAverage::drop_others() {
  for (size_t i = 0; i < avg_.size(); ++i)
    if (!keeps(i)) avg_[i].second = Tensor();
}

int64_t WeightAverage::bytes() const {
  int64_t n = 0;
  for (const auto& [name, t] : avg_)
    if (t.defined()) n += static_cast<int64_t>(t.nbytes());
  return n;
}

void WeightAverage::update(Module& model) { update(model, decay_); }

void WeightAverage::update(Module& model, double decay) {
  const auto cur = model_tensors(model);
  std::vector<Tensor> a, c;
  for (size_t i = 0; i < cur.size(); ++i) {
    if (!keeps(i)) continue;
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
  const auto cur = model_tensors(model);
  for (size_t i = 0; i < cur.size(); ++i) {
    if (!keeps(i)) continue;
    Tensor held = avg_[i].second.clone();
    avg_[i].second.copy_from(*cur[i].second);
    cur[i].second->copy_from(held);
  }
  model.refresh_working_parameters();
}

void WeightAverage::copy_to(Module& model) {
  const auto cur = model_tensors(model);
  for (size_t i = 0; i < cur.size(); ++i)
    if (keeps(i)) cur[i].second->copy_from(avg_[i].second);
  model.refresh_working_parameters();
}

void WeightAverage::copy_from(Module& model) {
  const auto cur = model_tensors(model);
  for (size_t i = 0; i < cur.size(); ++i)
    if (keeps(i)) avg_[i].second.copy_from(*cur[i].second);
}

std::vector<std::pair<std::string, Tensor*>> WeightAverage::named() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [n, t] : avg_) out.emplace_back(n, &t);
  return out;
}

}  // namespace mlai::nn
