// Freezing and unfreezing a model's backbone (see finetune.h).
#include "nn/finetune.h"

#include <algorithm>
#include <functional>
#include <set>
#include <stdexcept>

#include "nn/conv_layers.h"

namespace mlai::nn {

namespace {
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

// Whether `name` is module `prefix` or inside it ("layer1.0.conv1.weight" is in "layer1").
bool in_module(const std::string& name, const std::string& prefix) {
  return name == prefix || name.compare(0, prefix.size() + 1, prefix + ".") == 0;
}
bool in_head(const std::string& name, const std::string& head) { return in_module(name, head); }

// BaseFinetuning.freeze over the parameters `chosen` picks: requires_grad off, except batch
// norm's with train_bn; without it those batch norms stop tracking statistics.
std::vector<std::string> freeze_where(Module& m, const std::function<bool(const std::string&)>& chosen,
                                      bool train_bn) {
  const auto bns = named_batch_norms(m);
  std::set<std::string> bn_params;
  for (const auto& [name, bn] : bns)
    for (const auto& [n, v] : bn->named_parameters()) bn_params.insert(name + "." + n);
  std::vector<std::string> frozen;
  for (const auto& [n, v] : m.named_parameters())
    if (chosen(n) && (!train_bn || !bn_params.count(n))) frozen.push_back(n);
  set_requires_grad(m, {frozen.begin(), frozen.end()}, false);
  if (!train_bn)
    for (const auto& [name, bn] : bns)
      if (chosen(name + ".weight")) bn->set_track_running_stats(false);
  return frozen;
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
  return freeze_where(m, [&](const std::string& n) { return !in_head(n, head); }, train_bn);
}

std::vector<std::string> freeze_modules(Module& m, const std::vector<std::string>& modules,
                                        bool train_bn) {
  const auto params = m.named_parameters();
  for (const std::string& mod : modules) {
    const bool found = std::any_of(params.begin(), params.end(),
                                   [&](const auto& p) { return in_module(p.first, mod); });
    if (found) continue;
    std::string names;  // the model's top-level modules, to choose from
    for (const auto& [n, c] : m.children()) names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("--freeze: the model has no module '" + mod +
                                "' with parameters (its modules: " + names +
                                "; deeper ones as layer1.0)");
  }
  return freeze_where(
      m,
      [&](const std::string& n) {
        return std::any_of(modules.begin(), modules.end(),
                           [&](const std::string& mod) { return in_module(n, mod); });
      },
      train_bn);
}

void make_trainable(Module& m, const std::vector<std::string>& names) {
  set_requires_grad(m, {names.begin(), names.end()}, true);
  // Batch norms whose parameters come back track statistics again (those frozen without
  // train_bn); the others never stopped.
  const auto bns = named_batch_norms(m);
  const std::set<std::string> back(names.begin(), names.end());
  for (const auto& [name, bn] : bns)
    if (back.count(name + ".weight")) bn->set_track_running_stats(true);
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
