// Define-by-run autograd: a Variable wraps a Tensor and, when it was computed from variables
// that require gradients, the Node that made it. backward() walks the recorded graph in
// reverse topological order and accumulates gradients into leaves; a leaf's "gradient ready"
// hooks fire once its gradient is final for this backward pass (the DDP reducer uses them).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace mlai::autograd {

using tensor::Device;
using tensor::DType;
using tensor::Shape;
using tensor::Tensor;

struct Node;
class Variable;

struct VariableImpl {
  Tensor data;
  Tensor grad;  // undefined until the first backward reaches this leaf
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // null for leaves
  std::vector<std::function<void(Variable&)>> grad_ready_hooks;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const { return impl_->data; }
  Tensor& data() { return impl_->data; }  // in-place updates (optimizers)
  const Tensor& grad() const { return impl_->grad; }
  void set_grad(Tensor g) { impl_->grad = std::move(g); }
  void zero_grad();  // fills an existing gradient with zeros, keeping its buffer (a view stays one)
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  void set_requires_grad(bool r);
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

  const Shape& shape() const { return impl_->data.shape(); }
  int64_t size(int dim) const { return impl_->data.size(dim); }
  int64_t numel() const { return impl_->data.numel(); }
  DType dtype() const { return impl_->data.dtype(); }
  Device device() const { return impl_->data.device(); }

  // Gradient of this scalar with respect to every leaf that requires grad (seed 1).
  void backward() const;
  // Same, seeded with grad_output (same shape as this variable).
  void backward(const Tensor& grad_output) const;

  // Runs when this leaf's gradient is final in a backward pass.
  void register_grad_ready_hook(std::function<void(Variable&)> hook);
  void clear_grad_ready_hooks() { impl_->grad_ready_hooks.clear(); }

  Variable detach() const { return Variable(impl_->data, false); }

 private:
  friend Variable make_result(Tensor, std::shared_ptr<Node>, std::vector<const Variable*>);
  explicit Variable(std::shared_ptr<VariableImpl> impl) : impl_(std::move(impl)) {}
  friend struct Engine;
  std::shared_ptr<VariableImpl> impl_;
};

// A recorded op. backward() returns one gradient per entry of `inputs` (undefined where an
// input needs none). Inputs that do not require grad are stored as null.
struct Node {
  virtual ~Node() = default;
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  virtual const char* name() const = 0;
  std::vector<std::shared_ptr<VariableImpl>> inputs;
};

// Whether ops record graphs in this thread.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
// torch.enable_grad(): records again inside a no-grad scope (activation checkpointing's
// recomputation).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool prev_;
};

// For op implementations: wraps `out`, attaching `node` (with its inputs set from `inputs`)
// when grad mode is on and any input requires grad; otherwise `node` is dropped.
Variable make_result(Tensor out, std::shared_ptr<Node> node, std::vector<const Variable*> inputs);
// True when an op over these inputs will record a node (lets ops skip saving tensors).
bool needs_grad(std::vector<const Variable*> inputs);

}  // namespace mlai::autograd
