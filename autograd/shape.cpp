// Reshape and flatten: views forward, a reshape of the gradient backward.
#include "autograd/ops.h"

namespace mlai::autograd {

namespace {
struct ReshapeNode : Node {
  Shape in_shape;
  std::vector<Tensor> backward(const Tensor& g) override { return {g.reshape(in_shape)}; }
  const char* name() const override { return "ReshapeBackward"; }
};

Variable view_as(const Variable& x, Tensor view) {
  auto node = std::make_shared<ReshapeNode>();
  node->in_shape = x.shape();
  return make_result(std::move(view), node, {&x});
}
}  // namespace

Variable reshape(const Variable& x, const Shape& shape) {
  return view_as(x, x.data().reshape(shape));
}

Variable flatten(const Variable& x, int start_dim) { return view_as(x, x.data().flatten(start_dim)); }

}  // namespace mlai::autograd
