// Matrix products: matmul with transposes, and the fully-connected layer y = x W^T + b with an
// optional fused relu (on CUDA the bias and relu ride in the GEMM's epilogue, and the bias
// gradient in the weight gradient's: tensor/linear_ops.h).
#include <tuple>

#include "autograd/ops.h"
#include "tensor/linear_ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
// 2 m n k for C[m, n] = op(A)[m, k] op(B)[k, n]: A's elements times B's columns, doubled.
int64_t matmul_flops(const Tensor& a, const Tensor& b, bool tb) {
  return 2 * a.numel() * (tb ? b.size(0) : b.size(1));
}

// C = op(A) op(B). dA = dC op(B)^T (transposed back when A was), likewise dB.
struct MatmulNode : Node {
  Tensor a, b;
  bool ta, tb;
  int64_t flops;  // the forward's; each backward product has as many multiply-adds
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor da, db;
    if (inputs[0]) {
      da = ta ? t::matmul(b, g, tb, true) : t::matmul(g, b, false, !tb);
      add_flops(flops);
    }
    if (inputs[1]) {
      db = tb ? t::matmul(g, a, true, ta) : t::matmul(a, g, !ta, false);
      add_flops(flops);
    }
    return {da, db};
  }
  const char* name() const override { return "MatmulBackward"; }
};

struct LinearNode : Node {
  Tensor x, w, y;  // y only when relu was fused
  bool has_bias;
  std::vector<Tensor> backward(const Tensor& g) override {
    const Tensor gz = y.defined() ? t::relu_backward(g, y) : g;
    Tensor dx, dw, db;
    const int64_t flops = 2 * x.numel() * w.size(0);  // each product: the forward's
    if (inputs[0]) {
      dx = t::matmul(gz, w);  // [B, out] @ [out, in]
      add_flops(flops);
    }
    const bool want_db = has_bias && inputs[2];
    if (inputs[1]) {
      std::tie(dw, db) = t::linear_weight_grad(gz, x, want_db);  // [out, B] @ [B, in], sum_B gz
      add_flops(flops);
    } else if (want_db) {
      db = t::sum_dim(gz, 0);
    }
    if (has_bias) return {dx, dw, db};
    return {dx, dw};
  }
  const char* name() const override { return "LinearBackward"; }
};
}  // namespace

Variable matmul(const Variable& a, const Variable& b, bool ta, bool tb) {
  const int64_t flops = matmul_flops(a.data(), b.data(), tb);
  std::shared_ptr<MatmulNode> node;
  if (needs_grad({&a, &b})) {
    node = std::make_shared<MatmulNode>();
    node->a = a.data();
    node->b = b.data();
    node->ta = ta;
    node->tb = tb;
    node->flops = flops;
  }
  add_flops(flops);
  return make_result(t::matmul(a.data(), b.data(), ta, tb), node, {&a, &b});
}

Variable linear(const Variable& x, const Variable& weight, const Variable& bias, bool apply_relu) {
  const bool has_bias = bias.defined();
  Tensor z =
      t::linear_forward(x.data(), weight.data(), has_bias ? bias.data() : Tensor(), apply_relu);
  add_flops(2 * x.data().numel() * weight.data().size(0));
  std::vector<const Variable*> ins{&x, &weight};
  if (has_bias) ins.push_back(&bias);
  std::shared_ptr<LinearNode> node;
  if (needs_grad(ins)) {
    node = std::make_shared<LinearNode>();
    node->x = x.data();
    node->w = weight.data();
    if (apply_relu) node->y = z;
    node->has_bias = has_bias;
  }
  return make_result(z, node, ins);
}

}  // namespace mlai::autograd
