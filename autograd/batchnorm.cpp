// Batch normalisation forward and backward, plain and with ResNet's epilogue fused in
// (act(bn(x) + z)). Training saves only mean and inv_std (plus x and gamma, which exist
// anyway, and the output when a relu needs its mask); evaluation is an affine map per channel.
#include <cmath>
#include <stdexcept>
#include <string>

#include "autograd/ops.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
struct BatchNormTrainNode : Node {
  Tensor x, gamma, mean, inv_std;
  std::vector<Tensor> backward(const Tensor& g) override {
    auto [dx, dgamma, dbeta] = t::batchnorm_backward(x, g, gamma, mean, inv_std);
    return {inputs[0] ? dx : Tensor(), inputs[1] ? dgamma : Tensor(), inputs[2] ? dbeta : Tensor()};
  }
  const char* name() const override { return "BatchNormBackward"; }
};

// Evaluation: y = x * s + b per channel with s = gamma / sqrt(running_var + eps), so
// dx = dy * s, dgamma = sum(dy * xhat), dbeta = sum(dy).
struct BatchNormEvalNode : Node {
  Tensor x, scale, xhat;  // scale and xhat broadcast to x's shape
  tensor::DType param_dtype;
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t c = x.size(-1);
    const Tensor g2 = g.reshape({-1, c});
    Tensor dx = inputs[0] ? t::mul(g, scale) : Tensor();
    // In x's dtype, then in the parameters' (float32 when x is half or bf16).
    Tensor dgamma =
        inputs[1] ? t::sum_dim(t::mul(g, xhat).reshape({-1, c}), 0).to(param_dtype) : Tensor();
    Tensor dbeta = inputs[2] ? t::sum_dim(g2, 0).to(param_dtype) : Tensor();
    return {dx, dgamma, dbeta};
  }
  const char* name() const override { return "BatchNormEvalBackward"; }
};
}  // namespace

Variable batchnorm(const Variable& x, const Variable& gamma, const Variable& beta,
                   Tensor& running_mean, Tensor& running_var, bool training, double momentum,
                   double eps) {
  if (training) {
    auto [y, mean, inv_std] = t::batchnorm_train(x.data(), gamma.data(), beta.data(), running_mean,
                                                 running_var, momentum, eps);
    std::shared_ptr<BatchNormTrainNode> node;
    if (needs_grad({&x, &gamma, &beta})) {
      node = std::make_shared<BatchNormTrainNode>();
      node->x = x.data();
      node->gamma = gamma.data();
      node->mean = mean;
      node->inv_std = inv_std;
    }
    return make_result(y, node, {&x, &gamma, &beta});
  }
  Tensor y = t::batchnorm_eval(x.data(), gamma.data(), beta.data(), running_mean, running_var, eps);
  std::shared_ptr<BatchNormEvalNode> node;
  if (needs_grad({&x, &gamma, &beta})) {
    // Per-channel scale and the normalised input, broadcast over rows (CPU: host vectors).
    const int64_t c = x.size(-1), rows = x.numel() / c;
    const auto g = gamma.data().to_double_vector(), rv = running_var.to_double_vector(),
               rm = running_mean.to_double_vector();
    std::vector<double> s(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
    for (size_t k = 0; k < s.size(); ++k) {
      const double inv = 1.0 / std::sqrt(rv[k] + eps);
      s[k] = g[k] * inv;
      shift[k] = -rm[k] * inv;
    }
    auto per_channel = [&](const std::vector<double>& v) {
      return t::broadcast_dim(t::cast(Tensor::from_vector(v, {1, c}), x.dtype()).to(x.device()),
                              {rows, c}, 0)
          .reshape(x.shape());
    };
    node = std::make_shared<BatchNormEvalNode>();
    node->x = x.data();
    node->param_dtype = gamma.data().dtype();
    node->scale = per_channel(s);
    std::vector<double> inv(static_cast<size_t>(c));
    for (size_t k = 0; k < inv.size(); ++k) inv[k] = 1.0 / std::sqrt(rv[k] + eps);
    node->xhat = t::add(t::mul(x.data(), per_channel(inv)), per_channel(shift));
  }
  return make_result(y, node, {&x, &gamma, &beta});
}

namespace {
// act(bn(x) + z): backward needs the forward's output only for the activation's mask.
struct BatchNormActNode : Node {
  Tensor x, gamma, mean, inv_std, y;  // y only when an activation was fused
  kernels::BnAct act;
  bool has_residual = false;
  std::vector<Tensor> backward(const Tensor& g) override {
    const bool want_dz = has_residual && inputs[3];
    t::BatchNormGrads d = t::batchnorm_act_backward(x, g, gamma, mean, inv_std, y, want_dz, act);
    std::vector<Tensor> out{inputs[0] ? d.dx : Tensor(), inputs[1] ? d.dgamma : Tensor(),
                            inputs[2] ? d.dbeta : Tensor()};
    if (has_residual) out.push_back(d.dz);
    return out;
  }
  const char* name() const override { return "BatchNormActBackward"; }
};
}  // namespace

Variable batchnorm_act(const Variable& x, const Variable& gamma, const Variable& beta,
                       const Variable& residual, kernels::BnAct act, Tensor& running_mean,
                       Tensor& running_var, bool training, double momentum, double eps) {
  std::vector<const Variable*> ins{&x, &gamma, &beta};
  if (residual.defined()) ins.push_back(&residual);
  const Tensor z = residual.defined() ? residual.data() : Tensor();
  if (!training) {
    if (!needs_grad(ins))
      return Variable(t::batchnorm_act_eval(x.data(), gamma.data(), beta.data(), running_mean,
                                            running_var, z, act, eps));
    // Gradients in evaluation mode (rare: feature attribution and the like): the unfused ops.
    Variable out = batchnorm(x, gamma, beta, running_mean, running_var, false, momentum, eps);
    if (residual.defined()) out = add(out, residual);
    return activate(out, act);
  }
  auto [y, mean, inv_std] = t::batchnorm_act_train(x.data(), gamma.data(), beta.data(), z, act,
                                                   running_mean, running_var, momentum, eps);
  std::shared_ptr<BatchNormActNode> node;
  if (needs_grad(ins)) {
    node = std::make_shared<BatchNormActNode>();
    node->x = x.data();
    node->gamma = gamma.data();
    node->mean = mean;
    node->inv_std = inv_std;
    if (act) node->y = y;
    node->act = act;
    node->has_residual = residual.defined();
  }
  return make_result(y, node, ins);
}

Variable activate(const Variable& x, kernels::BnAct act) {
  switch (act.kind) {
    case kernels::BnAct::kRelu:
      return relu(x);
    case kernels::BnAct::kRelu6:
      return relu6(x);
    case kernels::BnAct::kNone:
      break;
  }
  return x;
}

}  // namespace mlai::autograd
