// Freezing and unfreezing a model's backbone (see finetune.h).
#include "nn/finetune.h"

#include <set>
#include <stdexcept>

#include "nn/conv_layers.h"

namespace mlai::nn {

namespace {
// Every batch norm's parameter names, with their dotted prefixes.
void bn_parameter_names(const Module& m, const std::string& prefix, std::set<std::string>& out) {
  if (dynamic_cast<const BatchNorm2d*>(&m) != nullptr)
    for (const auto& [n, v] : m.named_parameters()) out.insert(prefix + n);
  for (const auto& [n, c] : m.children()) bn_parameter_names(*c, prefix + n + ".", out);
}

bool in_head(const std::string& name, const std::string& head) {
  return name.compare(0, head.size() + 1, head + ".") == 0;
}

// Sets requires_grad on the named parameters and their working copies.
void set_requires_grad(Module& m, const std::set<std::string>& names, bool on) {
  const auto params = m.named_parameters();
  const auto working = m.working_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    if (!names.count(params[i].first)) continue;
    Variable v = params[i].second;
    v.set_requires_grad(on);
    if (!on) v.set_grad(Tensor());  // no stale gradient for the optimizer to apply
    if (working[i].defined()) {
      Variable w = working[i];
      w.set_requires_grad(on);
      if (!on) w.set_grad(Tensor());
    }
  }
}
}  // namespace

std::string head_prefix(const Module& m) {
  const auto params = m.named_parameters();
  if (params.empty()) throw std::invalid_argument("the model has no parameters, so no head");
  const std::string& last = params.back().first;
  const size_t dot = last.rfind('.');
  if (dot == std::string::npos)
    throw std::invalid_argument("the model's last parameter '" + last + "' belongs to no layer");
  return last.substr(0, dot);
}

std::vector<std::string> head_parameter_names(const Module& m) {
  const std::string head = head_prefix(m);
  std::vector<std::string> out;
  for (const auto& [n, v] : m.named_parameters())
    if (in_head(n, head)) out.push_back(n);
  return out;
}

std::vector<std::string> freeze_backbone(Module& m, bool train_bn) {
  const std::string head = head_prefix(m);
  std::set<std::string> bn;
  bn_parameter_names(m, "", bn);
  std::vector<std::string> frozen;
  for (const auto& [n, v] : m.named_parameters())
    if (!in_head(n, head) && (!train_bn || !bn.count(n))) frozen.push_back(n);
  set_requires_grad(m, {frozen.begin(), frozen.end()}, false);
  if (!train_bn)
    for (BatchNorm2d* b : batch_norms(m)) b->set_track_running_stats(false);
  return frozen;
}

void make_trainable(Module& m, const std::vector<std::string>& names) {
  set_requires_grad(m, {names.begin(), names.end()}, true);
  for (BatchNorm2d* b : batch_norms(m)) b->set_track_running_stats(true);
}

std::vector<std::pair<std::string, Variable>> trainable_parameters(const Module& m) {
  std::vector<std::pair<std::string, Variable>> out;
  for (const auto& p : m.named_parameters())
    if (p.second.requires_grad()) out.push_back(p);
  return out;
}

int64_t trainable_parameter_count(const Module& m) {
  int64_t n = 0;
  for (const auto& [name, v] : trainable_parameters(m)) n += v.numel();
  return n;
}

double backbone_lr(int64_t epoch, int64_t unfreeze_epoch, double previous, double current,
                   double initial_ratio, double growth) {
  if (epoch < unfreeze_epoch) return -1.0;
  if (epoch == unfreeze_epoch) return current * initial_ratio;
  const double next = previous * growth;
  return next > current ? current : next;
}

}  // namespace mlai::nn
