// Dropout forward (random keep mask, saved as uint8) and backward (the same mask).
#include "autograd/ops.h"
#include "tensor/fused_ops.h"

namespace mlai::autograd {

namespace {
struct DropoutNode : Node {
  Tensor mask;
  double scale;
  std::vector<Tensor> backward(const Tensor& g) override {
    return {tensor::dropout_backward(g, mask, scale)};
  }
  const char* name() const override { return "DropoutBackward"; }
};
}  // namespace

Variable dropout(const Variable& x, double p, tensor::Generator& gen) {
  if (p == 0) return x;
  auto [y, mask] = tensor::dropout(x.data(), p, gen);
  std::shared_ptr<DropoutNode> node;
  if (needs_grad({&x})) {
    node = std::make_shared<DropoutNode>();
    node->mask = mask;
    node->scale = 1.0 / (1.0 - p);
  }
  return make_result(y, node, {&x});
}

}  // namespace mlai::autograd
