// SGD (momentum, dampening, nesterov, weight decay), Adam, AdamW, LARS and LAMB over the fused
// kernels.
#include "nn/optim.h"

#include <stdexcept>

#include "tensor/cuda_graph.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::nn {

Optimizer::Optimizer(std::vector<std::pair<std::string, Variable>> params,
                     const OptimizerConfig& cfg)
    : params_(std::move(params)), cfg_(cfg) {
  if (cfg.lr < 0) throw std::invalid_argument("learning rate must be >= 0");
  if (cfg.clip_value < 0) throw std::invalid_argument("gradient clip value must be >= 0");
  for (auto& [n, v] : params_)
    if (v.dtype() != DType::kFloat32)
      throw std::invalid_argument("optimizer: parameter " + n + " is " +
                                  tensor::dtype_name(v.dtype()) + " (float32 master weights expected)");
  group_of_.assign(params_.size(), 0);
  if (!cfg.owned.empty() && cfg.owned.size() != params_.size())
    throw std::invalid_argument("optimizer: ownership of " + std::to_string(cfg.owned.size()) +
                                " parameters given for " + std::to_string(params_.size()));
}

std::vector<Tensor> Optimizer::zero_state() const {
  std::vector<Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Variable& v = params_[i].second;
    out.push_back(owns(i) ? Tensor::zeros(v.shape(), DType::kFloat32, v.device()) : Tensor());
  }
  return out;
}

int64_t Optimizer::step_count() const {
  if (!step_offset_.defined()) return steps_;
  return steps_ - step_offset_.to(tensor::Device::cpu()).data<int64_t>()[0];
}

void Optimizer::set_capturable(bool on) {
  if (!on || params_.empty()) {
    lr_and_step_ = Tensor();
    return;
  }
  lr_and_step_ = Tensor::zeros({2 * kMaxCapturableGroups}, DType::kFloat64,
                               params_[0].second.device());
}

void Optimizer::stage() {
  if (!capturable()) return;
  if (group_count() > kMaxCapturableGroups)
    throw std::invalid_argument("optimizer: " + std::to_string(group_count()) +
                                " parameter groups, a capturable step takes at most " +
                                std::to_string(kMaxCapturableGroups));
  for (int g = 0; g < group_count(); ++g) {
    Tensor lr = lr_and_step_.slice(2 * g, 2 * g + 1), step = lr_and_step_.slice(2 * g + 1, 2 * g + 2);
    tensor::fill_(lr, group_lr(g));
    tensor::fill_(step, static_cast<double>(group_steps(g) + 1));
  }
}

void Optimizer::stage_unless_capturing() {
  if (capturable() && !tensor::capturing(lr_and_step_.device())) stage();
}

Tensor Optimizer::device_scalars(int g) const {
  return capturable() ? lr_and_step_.slice(2 * g, 2 * g + 2) : Tensor();
}

int Optimizer::add_group(const std::vector<std::string>& names, double lr) {
  return add_group(names, lr, step_count());
}

int Optimizer::add_group(const std::vector<std::string>& names, double lr, int64_t start) {
  if (lr < 0) throw std::invalid_argument("learning rate must be >= 0");
  if (names.empty()) throw std::invalid_argument("optimizer: a parameter group needs parameters");
  const int g = group_count();
  std::vector<size_t> idx;
  for (const auto& name : names) {
    size_t i = 0;
    while (i < params_.size() && params_[i].first != name) ++i;
    if (i == params_.size())
      throw std::invalid_argument("optimizer: no parameter '" + name + "' for a new group");
    if (group_of_[i] != 0)
      throw std::invalid_argument("optimizer: parameter '" + name + "' is in group " +
                                  std::to_string(group_of_[i]) + " already");
    idx.push_back(i);
  }
  for (size_t i : idx) group_of_[i] = g;
  groups_.push_back({lr, start});
  return g;
}

double Optimizer::group_lr(int g) const {
  return g == 0 ? cfg_.lr : groups_.at(static_cast<size_t>(g - 1)).lr;
}

int64_t Optimizer::group_start(int g) const {
  return g == 0 ? 0 : groups_.at(static_cast<size_t>(g - 1)).start;
}

void Optimizer::set_group_lr(int g, double lr) {
  if (lr < 0) throw std::invalid_argument("learning rate must be >= 0");
  if (g == 0) {
    cfg_.lr = lr;
  } else {
    groups_.at(static_cast<size_t>(g - 1)).lr = lr;
  }
}

std::vector<std::string> Optimizer::group_names(int g) const {
  std::vector<std::string> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (group_of_[i] == g) out.push_back(params_[i].first);
  return out;
}

void Optimizer::zero_grad() {
  for (auto& [n, v] : params_) v.zero_grad();
  for (auto& w : working_)
    if (w.defined()) w.zero_grad();
}

std::vector<Tensor> Optimizer::gradients() const {
  std::vector<Tensor> p, g, w;
  gather(p, g, w, {}, {}, -1, -1, !cfg_.sharded_gradients);
  return g;
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& slot : slots_)
    for (const Tensor& t : slot)
      if (t.defined()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

std::vector<Tensor*> Optimizer::state_of(size_t i) {
  std::vector<Tensor*> out;
  for (auto& slot : slots_) out.push_back(&slot.at(i));
  return out;
}

void Optimizer::set_working(std::vector<Variable> working) {
  if (!working.empty() && working.size() != params_.size())
    throw std::invalid_argument("optimizer: " + std::to_string(working.size()) +
                                " working copies for " + std::to_string(params_.size()) +
                                " parameters");
  for (size_t i = 0; i < working.size(); ++i)
    if (working[i].defined() && working[i].shape() != params_[i].second.shape())
      throw std::invalid_argument("optimizer: working copy of " + params_[i].first + " is " +
                                  working[i].data().str());
  working_ = std::move(working);
}

std::vector<std::pair<std::string, Tensor*>> Optimizer::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t s = 0; s < slots_.size(); ++s)
    for (size_t i = 0; i < params_.size(); ++i)
      out.emplace_back(params_[i].first + "." + slot_names_[s], &slots_[s][i]);
  return out;
}

bool Optimizer::decays(size_t i) const {
  if (!cfg_.no_bias_decay) return true;
  // A ViT's class token and position embeddings are not decayed either (timm's
  // no_weight_decay(): cls_token, pos_embed; here torchvision's names).
  const std::string& name = params_[i].first;
  if (name.ends_with("class_token") || name.ends_with("pos_embedding")) return false;
  return params_[i].second.shape().size() > 1;
}

std::vector<Optimizer::Launch> Optimizer::launches() const {
  std::vector<Launch> out;
  for (int g = 0; g < group_count(); ++g) {
    if (!cfg_.no_bias_decay || cfg_.weight_decay == 0) {
      out.push_back({g, -1, cfg_.weight_decay});
    } else {
      out.push_back({g, 1, cfg_.weight_decay});
      out.push_back({g, 0, 0.0});
    }
  }
  return out;
}

void Optimizer::gather(std::vector<Tensor>& p, std::vector<Tensor>& g, std::vector<Tensor>& w,
                       std::vector<std::vector<Tensor>*> out, std::vector<int> slots, int decayed,
                       int group, bool any_owner) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!any_owner && !owns(i)) continue;
    if (decayed >= 0 && decays(i) != (decayed == 1)) continue;
    if (group >= 0 && group_of_[i] != group) continue;
    const Variable& v = params_[i].second;
    const bool has_working = !working_.empty() && working_[i].defined();
    // With a working copy, its gradient is the one backward produced.
    const Tensor& grad = has_working ? working_[i].grad() : v.grad();
    if (!grad.defined()) continue;  // unused this step: left alone, as PyTorch does
    p.push_back(v.data());
    g.push_back(grad);
    w.push_back(has_working ? working_[i].data() : Tensor());
    for (size_t k = 0; k < slots.size(); ++k) out[k]->push_back(slots_[static_cast<size_t>(slots[k])][i]);
  }
}

SGD::SGD(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg)
    : Optimizer(std::move(params), cfg) {
  if (cfg.nesterov && (cfg.momentum <= 0 || cfg.dampening != 0))
    throw std::invalid_argument("nesterov momentum requires a momentum and zero dampening");
  if (cfg.momentum != 0) {
    slot_names_ = {"momentum_buffer"};
    slots_.push_back(zero_state());
  }
}

void SGD::step(float grad_scale, const Tensor& skip_if, const Tensor& inv_scale) {
  stage_unless_capturing();
  for (const Launch& l : launches()) {  // one fused launch family each
    std::vector<Tensor> p, g, w, m;
    if (cfg_.momentum != 0) {
      gather(p, g, w, {&m}, {0}, l.decayed, l.group);
    } else {
      gather(p, g, w, {}, {}, l.decayed, l.group);
    }
    auto a = step_args<kernels::SgdArgs>(l, grad_scale);
    a.momentum = cfg_.momentum;
    a.dampening = cfg_.dampening;
    a.nesterov = cfg_.nesterov;
    if (!p.empty()) launch(p, g, w, m, a, inv_scale, skip_if, device_scalars(l.group));
  }
  ++steps_;
}

void SGD::launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                 const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                 const kernels::SgdArgs& a, const Tensor& inv_scale, const Tensor& skip_if,
                 const Tensor& lr_and_step) {
  tensor::sgd_step_(p, g, w, m, a, inv_scale, skip_if, step_offset_, lr_and_step);
}

Adam::Adam(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg,
           bool decoupled)
    : Optimizer(std::move(params), cfg), decoupled_(decoupled) {
  if (cfg.beta1 < 0 || cfg.beta1 >= 1 || cfg.beta2 < 0 || cfg.beta2 >= 1)
    throw std::invalid_argument("Adam betas must be in [0, 1)");
  slot_names_ = {"exp_avg", "exp_avg_sq"};
  slots_.push_back(zero_state());
  slots_.push_back(zero_state());
}

void Adam::step(float grad_scale, const Tensor& skip_if, const Tensor& inv_scale) {
  stage_unless_capturing();
  for (const Launch& l : launches()) {  // one fused launch family each
    std::vector<Tensor> p, g, w, m, v;
    gather(p, g, w, {&m, &v}, {0, 1}, l.decayed, l.group);
    auto a = step_args<kernels::AdamArgs>(l, grad_scale);
    a.beta1 = cfg_.beta1;
    a.beta2 = cfg_.beta2;
    a.eps = cfg_.eps;
    a.decoupled = decoupled_;
    if (!p.empty()) launch(p, g, w, m, v, a, inv_scale, skip_if, device_scalars(l.group));
  }
  ++steps_;
}

void Adam::launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                  const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                  const std::vector<Tensor>& v, const kernels::AdamArgs& a, const Tensor& inv_scale,
                  const Tensor& skip_if, const Tensor& lr_and_step) {
  tensor::adam_step_(p, g, w, m, v, a, inv_scale, skip_if, step_offset_, lr_and_step);
}

Lars::Lars(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg)
    : SGD(std::move(params), cfg) {
  if (!(cfg.trust_coefficient > 0))
    throw std::invalid_argument("LARS trust coefficient must be > 0");
}

void Lars::launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                  const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                  const kernels::SgdArgs& a, const Tensor& inv_scale, const Tensor& skip_if,
                  const Tensor& lr_and_step) {
  kernels::LarsArgs la;
  la.sgd = a;
  la.trust_coefficient = cfg_.trust_coefficient;
  la.eps = cfg_.eps;
  la.trust_clip = cfg_.trust_clip;
  tensor::lars_step_(p, g, w, m, la, &scratch_, inv_scale, skip_if, step_offset_, lr_and_step);
}

Lamb::Lamb(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg)
    : Adam(std::move(params), cfg, true) {}

void Lamb::launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                  const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                  const std::vector<Tensor>& v, const kernels::AdamArgs& a, const Tensor& inv_scale,
                  const Tensor& skip_if, const Tensor& lr_and_step) {
  kernels::LambArgs la;
  la.adam = a;
  la.trust_clip = cfg_.trust_clip;
  tensor::lamb_step_(p, g, w, m, v, la, &scratch_, inv_scale, skip_if, step_offset_, lr_and_step);
}

std::unique_ptr<Optimizer> make_optimizer(std::vector<std::pair<std::string, Variable>> params,
                                          const OptimizerConfig& cfg) {
  if (cfg.name == "sgd") return std::make_unique<SGD>(std::move(params), cfg);
  if (cfg.name == "adam") return std::make_unique<Adam>(std::move(params), cfg, false);
  if (cfg.name == "adamw") return std::make_unique<Adam>(std::move(params), cfg, true);
  if (cfg.name == "lars") return std::make_unique<Lars>(std::move(params), cfg);
  if (cfg.name == "lamb") return std::make_unique<Lamb>(std::move(params), cfg);
  throw std::invalid_argument("unknown optimizer '" + cfg.name +
                              "' (expected sgd, adam, adamw, lars or lamb)");
}

}  // namespace mlai::nn
