// Reductions and their backwards (a broadcast of the upstream gradient).
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
struct SumNode : Node {
  Shape shape;
  int dim;  // -1 with all_ = true: the whole tensor
  bool all;
  double scale;
  std::vector<Tensor> backward(const Tensor& g) override {
    return {t::broadcast_dim(g, shape, all ? -1 : dim, scale)};
  }
  const char* name() const override { return "SumBackward"; }
};

Variable reduce(const Variable& x, Tensor out, bool all, int dim, double scale) {
  auto node = std::make_shared<SumNode>();
  node->shape = x.shape();
  node->all = all;
  node->dim = dim < 0 ? dim + x.data().ndim() : dim;
  node->scale = scale;
  return make_result(std::move(out), node, {&x});
}
}  // namespace

Variable sum(const Variable& x) { return reduce(x, t::sum(x.data()), true, -1, 1.0); }

Variable mean(const Variable& x) {
  const double s = 1.0 / static_cast<double>(x.numel());
  return reduce(x, t::mean(x.data()), true, -1, s);
}

Variable sum_dim(const Variable& x, int dim, bool keepdim) {
  return reduce(x, t::sum_dim(x.data(), dim, keepdim), false, dim, 1.0);
}

Variable mean_dim(const Variable& x, int dim, bool keepdim) {
  const double s = 1.0 / static_cast<double>(x.size(dim));
  return reduce(x, t::mean_dim(x.data(), dim, keepdim), false, dim, s);
}

}  // namespace mlai::autograd
