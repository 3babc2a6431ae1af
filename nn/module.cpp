// Module bookkeeping and Sequential.
#include "nn/module.h"

#include <stdexcept>

#include "autograd/hooks.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "tensor/ops.h"

namespace mlai::nn {

Variable& Module::register_parameter(const std::string& name, Tensor value) {
  for (auto& [n, v] : params_)
    if (n == name) throw std::logic_error("parameter '" + name + "' registered twice");
  params_.emplace_back(name, Variable(std::move(value), true));
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor value) {
  buffers_.emplace_back(name, std::move(value));
  return buffers_.back().second;
}

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, Variable>>& out) const {
  for (const auto& [n, v] : params_) out.emplace_back(prefix + n, v);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", out);
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Variable>> out;
  collect("", out);
  return out;
}

std::vector<Variable> Module::parameters() const {
  std::vector<Variable> out;
  for (auto& [n, v] : named_parameters()) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_buffers() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [n, b] : buffers_) out.emplace_back(n, &b);
  for (auto& [n, c] : children_)
    for (auto& [cn, b] : c->named_buffers()) out.emplace_back(n + "." + cn, b);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Module::named_tensors() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (auto& [n, v] : named_parameters()) out.emplace_back(n, &const_cast<Variable&>(v).data());
  for (auto& [n, b] : named_buffers()) out.emplace_back(n, b);
  return out;
}

std::vector<std::pair<std::string, Generator*>> Module::named_generators() {
  std::vector<std::pair<std::string, Generator*>> out;
  if (Generator* g = generator()) out.emplace_back("", g);
  for (auto& [n, c] : children_)
    for (auto& [cn, g] : c->named_generators()) out.emplace_back(cn.empty() ? n : n + "." + cn, g);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, v] : named_parameters()) n += v.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
  for (auto& v : parameters()) const_cast<Variable&>(v).zero_grad();
  for (auto& v : working_parameters())
    if (v.defined()) v.zero_grad();
}

void Module::to(const Device& d) {
  for (auto& [n, v] : params_) {
    v.data() = v.data().to(d);
    v.set_grad(Tensor());
  }
  for (auto& [n, b] : buffers_) b = b.to(d);
  for (auto& [n, c] : children_) c->to(d);
  if (compute_dtype_ != DType::kFloat32) set_compute_dtype(compute_dtype_);
}

void Module::set_compute_dtype(DType dt) {
  if (dt != DType::kFloat32 && dt != DType::kFloat16 && dt != DType::kBFloat16)
    throw std::invalid_argument(std::string("compute dtype must be float32, float16 or bfloat16, not ") +
                                tensor::dtype_name(dt));
  compute_dtype_ = dt;
  working_.clear();
  if (dt != DType::kFloat32 && low_precision_parameters())
    for (auto& [n, v] : params_) working_.emplace_back(tensor::cast(v.data(), dt), true);
  for (auto& [n, c] : children_) c->set_compute_dtype(dt);
}

void Module::collect_working(std::vector<Variable>& out) const {
  for (size_t i = 0; i < params_.size(); ++i)
    out.push_back(working_.empty() ? Variable() : working_[i]);
  for (const auto& [n, c] : children_) c->collect_working(out);
}

std::vector<Variable> Module::working_parameters() const {
  std::vector<Variable> out;
  collect_working(out);
  return out;
}

Variable Module::unit_forward(const Variable& x, bool recording) {
  const std::shared_ptr<ShardedUnit> unit = unit_;
  unit->gather(false);
  if (!recording) {  // (evaluation: no backward to prepare for)
    Variable out = forward(x);
    unit->release(false);
    return out;
  }
  // The order of FSDP's hooks: the parameters here for forward; in backward, a node on the
  // output gathers them again before any of the unit's nodes run, and one on the input lets
  // them go once every one has (they all feed the input's gradient).
  const Variable in = autograd::on_backward(x, [unit] { unit->release(true); });
  Variable out = checkpointed_ ? checkpointed_forward(in) : forward(in);
  out = autograd::on_backward(out, [unit] { unit->gather(true); });
  unit->release(false);
  return out;
}

void Module::refresh_working_parameters() {
  for (size_t i = 0; i < working_.size(); ++i)
    if (!params_[i].second.data().released())  // (ZeRO: a master another rank holds)
      working_[i].data().copy_from(tensor::cast(params_[i].second.data(), working_[i].dtype()));
  for (auto& [n, c] : children_) c->refresh_working_parameters();
}

const Variable& Module::use(const Variable& p) const {
  if (working_.empty() || !p.defined()) return p;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].second.impl() == p.impl()) return working_[i];
  return p;
}

void Module::check_anomaly(const Variable& in, const Variable& out, const std::string& what) {
  if (autograd::all_finite(out.data()) || !autograd::all_finite(in.data())) return;
  throw autograd::AnomalyError(what + " produced inf/nan in its output (its input was finite)");
}

void Module::label_for_trace(const std::string& name) {
  trace_label_ = name.empty() ? type_name() : name + " (" + type_name() + ")";
  for (auto& [n, c] : children_) c->label_for_trace(name.empty() ? n : name + "." + n);
}

void Sequential::add(std::shared_ptr<Module> m) {
  register_module(std::to_string(children().size()), std::move(m));
}

namespace {
thread_local ModuleFlops* g_module_flops = nullptr;
}  // namespace

ModuleFlops::Recording::Recording(ModuleFlops& into) : outer_(g_module_flops) {
  g_module_flops = &into;
}
ModuleFlops::Recording::~Recording() { g_module_flops = outer_; }

int64_t ModuleFlops::of(const Module* m) const {
  const auto it = flops_.find(m);
  return it == flops_.end() ? -1 : it->second;
}

ModuleFlops::Scope::Scope(const Module* m) : into_(g_module_flops), module_(m) {
  if (into_ != nullptr) start_ = autograd::flop_count();
}
ModuleFlops::Scope::~Scope() {
  if (into_ != nullptr) into_->flops_[module_] += autograd::flop_count() - start_;
}

namespace {
// The activation a module is, for fusing it into the batch norm before it (none: not one).
kernels::BnAct activation_of(const Module* m) {
  if (dynamic_cast<const ReLU*>(m) != nullptr) return kernels::BnAct::kRelu;
  if (dynamic_cast<const ReLU6*>(m) != nullptr) return kernels::BnAct::kRelu6;
  return kernels::BnAct::kNone;
}
}  // namespace

Variable Sequential::forward(const Variable& x) {
  Variable h = x;
  const auto& ch = children();
  for (size_t i = 0; i < ch.size(); ++i) {
    auto* lin = dynamic_cast<Linear*>(ch[i].second.get());
    if (lin && i + 1 < ch.size() && dynamic_cast<ReLU*>(ch[i + 1].second.get())) {
      trace::Span span([&] { return ch[i].first + " + " + ch[i + 1].first + " (Linear + ReLU)"; },
                       "forward");
      Variable out;
      {
        ModuleFlops::Scope flops(lin);  // (the ReLU's share: none)
        out = lin->forward_fused(h, /*apply_relu=*/true);
      }
      ModuleFlops::Scope relu_ran(ch[i + 1].second.get());  // (inside the Linear: 0)
      if (autograd::anomaly_forward())
        check_anomaly(h, out, ch[i].first + " + " + ch[i + 1].first + " (Linear + ReLU)");
      h = out;
      ++i;  // the ReLU ran inside the linear kernel
    } else if (auto* bn = dynamic_cast<BatchNorm2d*>(ch[i].second.get());
               bn != nullptr && i + 1 < ch.size() && activation_of(ch[i + 1].second.get())) {
      // Batch norm and its ReLU or ReLU6 (MobileNet's Conv2dNormActivation) as one op: one
      // pass over the activations each way instead of two, and one tensor kept for backward.
      const std::string what = ch[i].first + " + " + ch[i + 1].first + " (BatchNorm2d + " +
                               ch[i + 1].second->type_name() + ")";
      trace::Span span([&] { return what; }, "forward");
      const Variable out = bn->forward_act(h, Variable(), activation_of(ch[i + 1].second.get()));
      ModuleFlops::Scope act_ran(ch[i + 1].second.get());  // (inside the batch norm: 0)
      if (autograd::anomaly_forward()) check_anomaly(h, out, what);
      h = out;
      ++i;
    } else {
      h = (*ch[i].second)(h);
    }
  }
  return h;
}

}  // namespace mlai::nn
