// Activation checkpointing (see checkpoint.h).
#include "autograd/checkpoint.h"

#include <unordered_set>
#include <utility>
#include <vector>

#include "autograd/ops.h"

namespace mlai::autograd {

namespace {
// The leaves requiring gradients that `out`'s graph reaches, not crossing into `x` (whose graph,
// if any, belongs to the enclosing backward), in first-visit order.
std::vector<std::shared_ptr<VariableImpl>> leaves_of(const Variable& out, const Variable& x) {
  std::vector<std::shared_ptr<VariableImpl>> leaves;
  if (!out.grad_fn()) return leaves;
  std::vector<Node*> stack{out.grad_fn().get()};
  std::unordered_set<Node*> seen{stack.back()};
  std::unordered_set<VariableImpl*> found;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& in : n->inputs) {
      if (!in || (x.defined() && in == x.impl())) continue;
      if (in->grad_fn) {
        if (seen.insert(in->grad_fn.get()).second) stack.push_back(in->grad_fn.get());
      } else if (in->requires_grad && found.insert(in.get()).second) {
        leaves.push_back(in);
      }
    }
  }
  return leaves;
}

struct CheckpointNode : Node {
  std::function<Variable(const Variable&)> fn;
  RecomputeHooks hooks;
  Tensor x;             // the segment's input
  bool x_grad = false;  // inputs[0] is x
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    const size_t first_leaf = x_grad ? 1 : 0;
    // The leaves' gradients so far (and hooks) are set aside, so that the inner backward
    // produces this segment's contribution alone; the outer backward adds it to them.
    std::vector<std::pair<Tensor, std::vector<std::function<void(Variable&)>>>> saved;
    for (size_t i = first_leaf; i < inputs.size(); ++i) {
      saved.emplace_back(std::move(inputs[i]->grad), std::move(inputs[i]->grad_ready_hooks));
      inputs[i]->grad = Tensor();
      inputs[i]->grad_ready_hooks.clear();
    }
    Variable again(x, x_grad);
    std::vector<Tensor> grads;
    try {
      Variable out;
      {
        EnableGradGuard enable;
        if (hooks.before) hooks.before();
        // The recomputation's FLOPs are not the model's: left out of the count (throughput and
        // MFU count each product once, as the PaLM paper's MFU does).
        const int64_t flops = flop_count();
        try {
          out = fn(again);
          add_flops(flops - flop_count());
        } catch (...) {
          if (hooks.after) hooks.after();
          throw;
        }
        if (hooks.after) hooks.after();
      }
      if (out.requires_grad()) out.backward(grad_output);
      if (x_grad) grads.push_back(again.grad());
      for (size_t i = first_leaf; i < inputs.size(); ++i) grads.push_back(inputs[i]->grad);
    } catch (...) {
      for (size_t i = first_leaf; i < inputs.size(); ++i) {
        inputs[i]->grad = std::move(saved[i - first_leaf].first);
        inputs[i]->grad_ready_hooks = std::move(saved[i - first_leaf].second);
      }
      throw;
    }
    for (size_t i = first_leaf; i < inputs.size(); ++i) {
      inputs[i]->grad = std::move(saved[i - first_leaf].first);
      inputs[i]->grad_ready_hooks = std::move(saved[i - first_leaf].second);
    }
    x = Tensor();  // a second backward through this node is not supported, as in torch
    return grads;
  }
  const char* name() const override { return "CheckpointBackward"; }
};
}  // namespace

Variable checkpoint(const std::function<Variable(const Variable&)>& fn, const Variable& x,
                    RecomputeHooks hooks) {
  if (!grad_enabled()) return fn(x);
  Variable recorded = fn(x);
  auto leaves = leaves_of(recorded, x);
  const bool x_grad = x.requires_grad();
  if (!x_grad && leaves.empty()) return recorded;  // nothing to differentiate
  Variable out(recorded.data(), false);
  recorded = Variable();  // drops the segment's graph and, with it, its saved activations
  auto node = std::make_shared<CheckpointNode>();
  node->fn = fn;
  node->hooks = std::move(hooks);
  node->x = x.data();
  node->x_grad = x_grad;
  if (x_grad) node->inputs.push_back(x.impl());
  for (auto& l : leaves) node->inputs.push_back(std::move(l));
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return out;
}

}  // namespace mlai::autograd
