// Convolution and pooling with their backwards (NHWC).
#include "autograd/ops.h"
#include "tensor/nn_ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
// 2 x (output elements) x (multiply-adds per output: the filter's taps times its input channels,
// which for a grouped filter are the group's).
int64_t conv_flops(const Shape& y, const Shape& w) {
  return 2 * t::shape_numel(y) * (w[1] * w[2] * w[3]);
}

struct Conv2dNode : Node {
  Tensor x, w;
  int64_t stride, pad, groups;
  bool has_bias;
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx, dw, db;
    // Each backward product has the forward's multiply-adds (FlopCounterMode's count too).
    const int64_t flops = conv_flops(g.shape(), w.shape());
    if (inputs[0]) {
      dx = t::conv2d_backward_data(g, w, x.shape(), stride, pad, groups);
      add_flops(flops);
    }
    if (inputs[1] || (has_bias && inputs[2])) {
      add_flops(flops);
      auto [w_grad, b_grad] =
          t::conv2d_backward_filter(x, g, w.shape(), stride, pad, has_bias, groups);
      dw = w_grad;
      db = b_grad;
    }
    if (has_bias) return {dx, dw, db};
    return {dx, dw};
  }
  const char* name() const override { return "Conv2dBackward"; }
};

// The CPU backward scatters through the argmax; cuDNN's finds the maxima again from x and y,
// so on CUDA those two are kept instead (the argmax is not even produced there).
struct MaxPoolNode : Node {
  Tensor x, y, argmax;
  Shape x_shape;
  int64_t kernel, stride, pad;
  std::vector<Tensor> backward(const Tensor& g) override {
    return {t::maxpool2d_backward(g, x, y, argmax, x_shape, kernel, stride, pad)};
  }
  const char* name() const override { return "MaxPool2dBackward"; }
};
}  // namespace

Variable conv2d(const Variable& x, const Variable& w, const Variable& bias, int64_t stride,
                int64_t pad, int64_t groups) {
  const bool has_bias = bias.defined();
  Tensor y = t::conv2d(x.data(), w.data(), has_bias ? bias.data() : Tensor(), stride, pad, groups);
  add_flops(conv_flops(y.shape(), w.shape()));
  std::vector<const Variable*> ins{&x, &w};
  if (has_bias) ins.push_back(&bias);
  std::shared_ptr<Conv2dNode> node;
  if (needs_grad(ins)) {
    node = std::make_shared<Conv2dNode>();
    node->x = x.data();
    node->w = w.data();
    node->stride = stride;
    node->pad = pad;
    node->groups = groups;
    node->has_bias = has_bias;
  }
  return make_result(y, node, ins);
}

Variable maxpool2d(const Variable& x, int64_t kernel, int64_t stride, int64_t pad) {
  auto [y, argmax] = t::maxpool2d(x.data(), kernel, stride, pad);
  std::shared_ptr<MaxPoolNode> node;
  if (needs_grad({&x})) {
    node = std::make_shared<MaxPoolNode>();
    if (x.data().device().is_cuda()) {
      node->x = x.data();
      node->y = y;
    } else {
      node->argmax = argmax;  // backward needs only where each maximum came from
    }
    node->x_shape = x.shape();
    node->kernel = kernel;
    node->stride = stride;
    node->pad = pad;
  }
  return make_result(y, node, {&x});
}

Variable global_avgpool(const Variable& x) {
  if (x.data().ndim() != 4)
    throw std::invalid_argument("global_avgpool: expected NHWC, got " + tensor::shape_str(x.shape()));
  return mean_dim(reshape(x, {x.size(0), x.size(1) * x.size(2), x.size(3)}), 1);
}

}  // namespace mlai::autograd
