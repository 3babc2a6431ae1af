// Elementwise ops and their backwards.
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
struct AddNode : Node {
  double sign_b;  // +1 for add, -1 for sub
  explicit AddNode(double s) : sign_b(s) {}
  std::vector<Tensor> backward(const Tensor& g) override {
    return {g, sign_b > 0 ? g : t::scale(g, -1.0)};
  }
  const char* name() const override { return sign_b > 0 ? "AddBackward" : "SubBackward"; }
};

struct MulNode : Node {
  Tensor a, b;
  std::vector<Tensor> backward(const Tensor& g) override {
    return {inputs[0] ? t::mul(g, b) : Tensor(), inputs[1] ? t::mul(g, a) : Tensor()};
  }
  const char* name() const override { return "MulBackward"; }
};

struct ScaleNode : Node {
  double alpha;
  explicit ScaleNode(double a) : alpha(a) {}
  std::vector<Tensor> backward(const Tensor& g) override { return {t::scale(g, alpha)}; }
  const char* name() const override { return "ScaleBackward"; }
};

// Saves the output: relu'(x) = [y > 0], and y is needed downstream anyway.
struct ReluNode : Node {
  Tensor y;
  std::vector<Tensor> backward(const Tensor& g) override { return {t::relu_backward(g, y)}; }
  const char* name() const override { return "ReluBackward"; }
};

// relu6'(x) = [0 < y < 6], read from the output as for relu.
struct Relu6Node : Node {
  Tensor y;
  std::vector<Tensor> backward(const Tensor& g) override { return {t::relu6_backward(g, y)}; }
  const char* name() const override { return "Relu6Backward"; }
};

struct BiasActNode : Node {
  Tensor y;  // set only when relu was applied
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor gz = y.defined() ? t::relu_backward(g, y) : g;
    return {gz, inputs[1] ? t::sum_dim(gz, 0) : Tensor()};
  }
  const char* name() const override { return "BiasActBackward"; }
};
}  // namespace

Variable add(const Variable& a, const Variable& b) {
  return make_result(t::add(a.data(), b.data()), std::make_shared<AddNode>(1.0), {&a, &b});
}

Variable sub(const Variable& a, const Variable& b) {
  return make_result(t::sub(a.data(), b.data()), std::make_shared<AddNode>(-1.0), {&a, &b});
}

Variable mul(const Variable& a, const Variable& b) {
  std::shared_ptr<MulNode> node;
  if (needs_grad({&a, &b})) {
    node = std::make_shared<MulNode>();
    node->a = a.data();
    node->b = b.data();
  }
  return make_result(t::mul(a.data(), b.data()), node, {&a, &b});
}

Variable scale(const Variable& x, double alpha) {
  return make_result(t::scale(x.data(), alpha), std::make_shared<ScaleNode>(alpha), {&x});
}

Variable relu(const Variable& x) {
  Tensor y = t::relu(x.data());
  std::shared_ptr<ReluNode> node;
  if (needs_grad({&x})) {
    node = std::make_shared<ReluNode>();
    node->y = y;
  }
  return make_result(y, node, {&x});
}

Variable relu6(const Variable& x) {
  Tensor y = t::relu6(x.data());
  std::shared_ptr<Relu6Node> node;
  if (needs_grad({&x})) {
    node = std::make_shared<Relu6Node>();
    node->y = y;
  }
  return make_result(y, node, {&x});
}

Variable bias_act(const Variable& x, const Variable& bias, bool apply_relu) {
  Tensor y = t::bias_act(x.data(), bias.data(), apply_relu);
  std::shared_ptr<BiasActNode> node;
  if (needs_grad({&x, &bias})) {
    node = std::make_shared<BiasActNode>();
    if (apply_relu) node->y = y;
  }
  return make_result(y, node, {&x, &bias});
}

}  // namespace mlai::autograd
