// Activation checkpointing (see checkpoint.h).
#include "autograd/checkpoint.h"

#include <cstddef>
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

// While alive: the leaves' gradients so far and their hooks are set aside, so that a nested
// backward produces one segment's contribution alone (the outer backward adds it to them).
class SetAside {
 public:
  SetAside(std::vector<std::shared_ptr<VariableImpl>>::const_iterator begin,
           std::vector<std::shared_ptr<VariableImpl>>::const_iterator end)
      : leaves_(begin, end) {
    for (auto& l : leaves_) {
      grads_.push_back(std::move(l->grad));
      hooks_.push_back(std::move(l->grad_ready_hooks));
      l->grad = Tensor();
      l->grad_ready_hooks.clear();
    }
  }
  ~SetAside() {
    for (size_t i = 0; i < leaves_.size(); ++i) {
      leaves_[i]->grad = std::move(grads_[i]);
      leaves_[i]->grad_ready_hooks = std::move(hooks_[i]);
    }
  }
  SetAside(const SetAside&) = delete;
  SetAside& operator=(const SetAside&) = delete;

 private:
  std::vector<std::shared_ptr<VariableImpl>> leaves_;
  std::vector<Tensor> grads_;
  std::vector<std::vector<std::function<void(Variable&)>>> hooks_;
};

// hooks.before now, hooks.after when it goes (also when the recomputation throws).
class Around {
 public:
  explicit Around(const RecomputeHooks& h) : h_(h) {
    if (h_.before) h_.before();
  }
  ~Around() {
    if (h_.after) h_.after();
  }
  Around(const Around&) = delete;
  Around& operator=(const Around&) = delete;

 private:
  const RecomputeHooks& h_;
};

struct CheckpointNode : Node {
  std::function<Variable(const Variable&)> fn;
  RecomputeHooks hooks;
  Tensor x;             // the segment's input
  bool x_grad = false;  // inputs[0] is x
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    const size_t first_leaf = x_grad ? 1 : 0;
    SetAside aside(inputs.begin() + static_cast<std::ptrdiff_t>(first_leaf), inputs.end());
    Variable again(x, x_grad);
    Variable out;
    {
      EnableGradGuard enable;
      Around around(hooks);
      // The recomputation's FLOPs are not the model's: left out of the count (throughput and
      // MFU count each product once, as the PaLM paper's MFU does).
      const int64_t flops = flop_count();
      out = fn(again);
      add_flops(flops - flop_count());
    }
    if (out.requires_grad()) out.backward(grad_output);
    std::vector<Tensor> grads;
    if (x_grad) grads.push_back(again.grad());
    for (size_t i = first_leaf; i < inputs.size(); ++i) grads.push_back(inputs[i]->grad);
    x = Tensor();  // a second backward through this node is not supported, as in torch
    return grads;  // (aside then puts the leaves' own gradients and hooks back)
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
