// The backward hook op (see hooks.h).
#include "autograd/hooks.h"

#include <memory>
#include <utility>
#include <vector>

namespace mlai::autograd {

namespace {
struct BackwardHookNode : Node {
  std::function<void()> fn;
  std::vector<Tensor> backward(const Tensor& grad_output) override {
    fn();
    return {grad_output};
  }
  const char* name() const override { return "BackwardHook"; }
};
}  // namespace

Variable on_backward(const Variable& x, std::function<void()> fn) {
  auto node = std::make_shared<BackwardHookNode>();
  node->fn = std::move(fn);
  return make_result(x.data(), std::move(node), {&x});
}

}  // namespace mlai::autograd
