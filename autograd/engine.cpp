// The backward engine: Kahn's algorithm over the recorded graph from the root, so each node
// runs once all of its consumers have delivered their gradients; leaf gradients accumulate in
// place (a gradient that is a view into a bucket stays one) and leaf hooks fire when the last
// contribution has arrived.
#include <deque>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "autograd/anomaly.h"
#include "autograd/variable.h"
#include "tensor/ops.h"
#include "tensor/trace.h"

namespace mlai::autograd {

namespace {
thread_local bool g_grad_enabled = true;

// A leaf's gradient: its own buffer (the optimizer, the reducer and zero_grad write into it),
// summed in place.
void accumulate(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) {
    slot = g.clone();  // own the buffer: g may be shared with another input's gradient
  } else {
    tensor::axpy_(1.0, g, slot);
  }
}

// An op's output gradient, until the op's backward takes it: kept as given, with no copy
// (nothing writes into a gradient it is given: backwards read theirs and return new tensors
// or views), and a second one arriving replaces it with the sum, out of place, so a buffer
// shared with another input's gradient (an add's backward returns g twice) is never written.
// The same bits as a copy and an in-place add; one pass instead of two, or none for the many
// outputs with one consumer.
void accumulate_shared(Tensor& slot, const Tensor& g) {
  slot = slot.defined() ? tensor::add(slot, g) : g;
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }
EnableGradGuard::EnableGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_enabled = prev_; }

Variable::Variable(Tensor data, bool requires_grad) : impl_(std::make_shared<VariableImpl>()) {
  impl_->data = std::move(data);
  set_requires_grad(requires_grad);
}

void Variable::set_requires_grad(bool r) {
  if (r && !tensor::is_floating(impl_->data.dtype()))
    throw std::invalid_argument("only floating-point variables can require gradients");
  impl_->requires_grad = r;
}

void Variable::zero_grad() {
  if (impl_->grad.defined()) tensor::fill_(impl_->grad, 0.0);
}

void Variable::register_grad_ready_hook(std::function<void(Variable&)> hook) {
  if (!is_leaf()) throw std::logic_error("grad-ready hooks are for leaf variables");
  impl_->grad_ready_hooks.push_back(std::move(hook));
}

bool needs_grad(std::vector<const Variable*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Variable* v : inputs)
    if (v && v->requires_grad()) return true;
  return false;
}

Variable make_result(Tensor out, std::shared_ptr<Node> node, std::vector<const Variable*> inputs) {
  Variable v(std::move(out), false);
  if (!node || !needs_grad(inputs)) return v;
  for (const Variable* in : inputs)
    node->inputs.push_back(in && in->requires_grad() ? in->impl() : nullptr);
  v.impl_->requires_grad = true;
  v.impl_->grad_fn = std::move(node);
  return v;
}

namespace {
// --detect-anomaly: the first op whose gradients hold inf/nan though the gradient it was given
// did not (the seed is checked as the root's).
void check_gradients(const Node& n, const Tensor& given, const std::vector<Tensor>& produced) {
  if (!all_finite(given)) return;  // (an earlier op's, or the seed's: reported there)
  for (size_t i = 0; i < produced.size(); ++i)
    if (!all_finite(produced[i]))
      throw AnomalyError(std::string(n.name()) + " produced inf/nan in the gradient for its input " +
                         std::to_string(i) + " (the gradient it was given was finite)");
}
}  // namespace

struct Engine {
  static void run(const Variable& root, const Tensor& seed) {
    if (!root.requires_grad())
      throw std::logic_error("backward() on a variable that does not require grad");
    if (seed.shape() != root.shape())
      throw std::invalid_argument("backward: gradient shape " + tensor::shape_str(seed.shape()) +
                                  " does not match " + tensor::shape_str(root.shape()));
    const auto& root_impl = root.impl();
    if (!root_impl->grad_fn) {  // a leaf: its gradient is the seed
      accumulate(root_impl->grad, seed);
      fire_hooks(root_impl);
      return;
    }
    // Count, for every node and leaf, how many edges lead into it.
    std::unordered_map<Node*, int> pending;
    std::unordered_map<VariableImpl*, int> leaf_pending;
    std::vector<Node*> stack{root_impl->grad_fn.get()};
    std::unordered_set<Node*> seen{stack.back()};
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      for (const auto& in : n->inputs) {
        if (!in) continue;
        if (in->grad_fn) {
          Node* child = in->grad_fn.get();
          ++pending[child];
          if (seen.insert(child).second) stack.push_back(child);
        } else {
          ++leaf_pending[in.get()];
        }
      }
    }
    if (anomaly_backward() && !all_finite(seed))
      throw AnomalyError("backward's seed gradient holds inf/nan");
    std::unordered_map<Node*, Tensor> grads;
    grads[root_impl->grad_fn.get()] = seed;
    std::deque<Node*> ready{root_impl->grad_fn.get()};
    while (!ready.empty()) {
      Node* n = ready.front();
      ready.pop_front();
      auto it = grads.find(n);
      std::vector<Tensor> in_grads;
      if (it != grads.end() && it->second.defined()) {
        {
          trace::Span span(n->name(), "backward");
          in_grads = n->backward(it->second);
        }
        if (in_grads.size() != n->inputs.size())
          throw std::logic_error(std::string(n->name()) + ": backward returned " +
                                 std::to_string(in_grads.size()) + " gradients for " +
                                 std::to_string(n->inputs.size()) + " inputs");
        if (anomaly_backward()) check_gradients(*n, it->second, in_grads);
        grads.erase(it);
      }
      for (size_t i = 0; i < n->inputs.size(); ++i) {
        const auto& in = n->inputs[i];
        if (!in) continue;
        const Tensor* g = i < in_grads.size() && in_grads[i].defined() ? &in_grads[i] : nullptr;
        if (in->grad_fn) {
          Node* child = in->grad_fn.get();
          if (g) accumulate_shared(grads[child], *g);
          if (--pending[child] == 0) ready.push_back(child);
        } else {
          if (g) {
            if (g->shape() != in->data.shape())
              throw std::logic_error(std::string(n->name()) + ": gradient shape " +
                                     tensor::shape_str(g->shape()) + " for a leaf of shape " +
                                     tensor::shape_str(in->data.shape()));
            accumulate(in->grad, *g);
          }
          if (--leaf_pending[in.get()] == 0) fire_hooks(in);
        }
      }
    }
  }

  static void fire_hooks(const std::shared_ptr<VariableImpl>& impl) {
    if (impl->grad_ready_hooks.empty()) return;
    Variable v(impl);
    for (auto& h : impl->grad_ready_hooks) h(v);
  }
};

void Variable::backward() const {
  if (numel() != 1)
    throw std::invalid_argument("backward() without a gradient needs a scalar, got shape " +
                                tensor::shape_str(shape()));
  Engine::run(*this, Tensor::full(shape(), 1.0, dtype(), device()));
}

void Variable::backward(const Tensor& grad_output) const { Engine::run(*this, grad_output); }

}  // namespace mlai::autograd
