// Every differentiable op against finite differences, in float64 on the CPU, on random shapes
// and random data. ReLU inputs are kept at least 1e-3 away from its kink at 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

class Gradcheck : public ::testing::Test {
 protected:
  std::mt19937 rng{42};
  tensor::Generator gen{7};
  int64_t dim(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  Tensor rand(const Shape& s) { return Tensor::uniform(s, -2.0, 2.0, gen, DType::kFloat64); }
  // Random values with |v| >= 1e-3, for functions with a kink at 0.
  Tensor rand_away_from_zero(const Shape& s) {
    Tensor t = rand(s);
    double* p = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (std::fabs(p[i]) < 1e-3) p[i] = p[i] < 0 ? -0.5 : 0.5;
    return t;
  }
  void expect_ok(const GradcheckFn& f, const std::vector<Tensor>& in) {
    const GradcheckResult r = gradcheck(f, in);
    EXPECT_TRUE(r.ok) << r.message;
  }
};

TEST_F(Gradcheck, AddSubMul) {
  for (int trial = 0; trial < 3; ++trial) {
    const Shape s{dim(1, 5), dim(1, 7)};
    expect_ok([](auto& v) { return add(v[0], v[1]); }, {rand(s), rand(s)});
    expect_ok([](auto& v) { return sub(v[0], v[1]); }, {rand(s), rand(s)});
    expect_ok([](auto& v) { return mul(v[0], v[1]); }, {rand(s), rand(s)});
    expect_ok([](auto& v) { return mul(v[0], v[0]); }, {rand(s)});  // same input twice
  }
}

TEST_F(Gradcheck, ScaleAndRelu) {
  const Shape s{dim(2, 9), dim(1, 4)};
  expect_ok([](auto& v) { return scale(v[0], -1.75); }, {rand(s)});
  expect_ok([](auto& v) { return relu(v[0]); }, {rand_away_from_zero(s)});
  // relu6 on [-4, 10] (away from its kinks at 0 and 6): both clamps and the slope between.
  Tensor x = scale(rand_away_from_zero(s), 7.0);  // [-7, 7]
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    p[i] += 3.0;
    if (std::fabs(p[i] - 6.0) < 1e-3) p[i] = 6.5;
    if (std::fabs(p[i]) < 1e-3) p[i] = 0.5;
  }
  expect_ok([](auto& v) { return relu6(v[0]); }, {x});
}

TEST_F(Gradcheck, BiasAct) {
  const int64_t rows = dim(1, 6), cols = dim(1, 9);
  for (bool act : {false, true}) {
    // x + b must also stay away from 0 for the relu variant: check via a shifted input.
    Tensor x = rand_away_from_zero({rows, cols});
    Tensor b = Tensor::zeros({cols}, DType::kFloat64);
    tensor::uniform_(b, 0.0, 1e-4, gen);
    if (act) {
      double* p = x.data<double>();
      for (int64_t i = 0; i < x.numel(); ++i) p[i] += (p[i] > 0 ? 1e-3 : -1e-3);
    }
    expect_ok([act](auto& v) { return bias_act(v[0], v[1], act); }, {x, b});
  }
}

TEST_F(Gradcheck, MatmulAllTransposes) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t m = dim(1, 6), k = dim(1, 5), n = dim(1, 7);
      const Tensor a = ta ? rand({k, m}) : rand({m, k});
      const Tensor b = tb ? rand({n, k}) : rand({k, n});
      expect_ok([ta, tb](auto& v) { return matmul(v[0], v[1], ta, tb); }, {a, b});
    }
  }
}

TEST_F(Gradcheck, Linear) {
  const int64_t batch = dim(1, 5), in = dim(1, 6), out = dim(1, 4);
  expect_ok([](auto& v) { return linear(v[0], v[1], v[2], false); },
            {rand({batch, in}), rand({out, in}), rand({out})});
  expect_ok([](auto& v) { return linear(v[0], v[1], Variable(), false); },
            {rand({batch, in}), rand({out, in})});
  // With relu: inputs chosen so no pre-activation is within 1e-3 of 0 (checked below).
  for (int attempt = 0; attempt < 20; ++attempt) {
    Tensor x = rand({batch, in}), w = rand({out, in}), b = rand({out});
    const Tensor z = tensor::bias_act(tensor::matmul(x, w, false, true), b, false);
    bool near_kink = false;
    for (double v : z.to_vector<double>()) near_kink |= std::fabs(v) < 1e-3;
    if (near_kink) continue;
    expect_ok([](auto& v) { return linear(v[0], v[1], v[2], true); }, {x, w, b});
    return;
  }
  FAIL() << "could not draw inputs away from the relu kink";
}

TEST_F(Gradcheck, Reductions) {
  const Shape s{dim(1, 4), dim(1, 5), dim(1, 3)};
  expect_ok([](auto& v) { return sum(v[0]); }, {rand(s)});
  expect_ok([](auto& v) { return mean(v[0]); }, {rand(s)});
  for (int d = 0; d < 3; ++d) {
    for (bool keep : {false, true}) {
      expect_ok([d, keep](auto& v) { return sum_dim(v[0], d, keep); }, {rand(s)});
      expect_ok([d, keep](auto& v) { return mean_dim(v[0], d, keep); }, {rand(s)});
    }
  }
}

TEST_F(Gradcheck, CrossEntropyWithAndWithoutSmoothing) {
  const int64_t rows = dim(1, 8), classes = dim(2, 11);
  std::vector<int64_t> lab(static_cast<size_t>(rows));
  for (auto& l : lab) l = std::uniform_int_distribution<int64_t>(0, classes - 1)(rng);
  const Tensor labels = Tensor::from_vector(lab, {rows});
  for (double eps : {0.0, 0.1, 0.3}) {
    expect_ok([&labels, eps](auto& v) { return cross_entropy(v[0], labels, eps); },
              {rand({rows, classes})});
  }
}

// Class weights (PyTorch's weight=): the gradient of the weighted mean, with and without
// smoothing, and its value against PyTorch's formula written out in double:
//   sum_i [(1-eps) w[y_i] (-log p_i,y_i) + eps/C sum_c w[c] (-log p_i,c)] / sum_i w[y_i].
TEST_F(Gradcheck, CrossEntropyWithClassWeights) {
  const int64_t rows = dim(1, 8), classes = dim(2, 11);
  std::vector<int64_t> lab(static_cast<size_t>(rows));
  for (auto& l : lab) l = std::uniform_int_distribution<int64_t>(0, classes - 1)(rng);
  const Tensor labels = Tensor::from_vector(lab, {rows});
  std::vector<double> w(static_cast<size_t>(classes));
  double wsum = 0;
  for (auto& x : w) wsum += x = std::uniform_real_distribution<double>(0.2, 3.0)(rng);
  const ClassWeights cw{Tensor::from_vector(w, {classes}), wsum};
  for (double eps : {0.0, 0.1, 0.3}) {
    expect_ok([&labels, &cw, eps](auto& v) { return cross_entropy(v[0], labels, eps, &cw); },
              {rand({rows, classes})});
    const Tensor z = rand({rows, classes});
    const auto zv = z.to_vector<double>();
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows; ++i) {
      double mx = -1e300, se = 0;
      for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, zv[static_cast<size_t>(i * classes + c)]);
      for (int64_t c = 0; c < classes; ++c) se += std::exp(zv[static_cast<size_t>(i * classes + c)] - mx);
      auto nll = [&](int64_t c) { return mx + std::log(se) - zv[static_cast<size_t>(i * classes + c)]; };
      const size_t y = static_cast<size_t>(lab[static_cast<size_t>(i)]);
      num += (1 - eps) * w[y] * nll(static_cast<int64_t>(y));
      for (int64_t c = 0; c < classes; ++c)
        num += eps / static_cast<double>(classes) * w[static_cast<size_t>(c)] * nll(c);
      den += w[y];
    }
    EXPECT_NEAR(cross_entropy(Variable(z), labels, eps, &cw).data().item(), num / den,
                1e-12 * (1 + num / den));
  }
  // Equal weights are no weights.
  const ClassWeights ones{Tensor::full({classes}, 2.5, DType::kFloat64), 2.5 * classes};
  const Tensor z = rand({rows, classes});
  EXPECT_NEAR(cross_entropy(Variable(z), labels, 0.1, &ones).data().item(),
              cross_entropy(Variable(z), labels, 0.1).data().item(), 1e-12);
}

TEST_F(Gradcheck, ReshapeFlattenAndAComposition) {
  expect_ok([](auto& v) { return flatten(v[0], 1); }, {rand({2, 3, 4})});
  expect_ok([](auto& v) { return reshape(v[0], {4, -1}); }, {rand({2, 3, 4})});
  // A two-layer MLP with a loss: the path the trainer takes.
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 0, 2}, {3});
  expect_ok(
      [&labels](auto& v) {
        Variable h = linear(flatten(v[0], 1), v[1], v[2], false);
        return cross_entropy(linear(h, v[3], v[4], false), labels, 0.05);
      },
      {rand({3, 2, 2}), rand({5, 4}), rand({5}), rand({3, 5}), rand({3})});
}

TEST_F(Gradcheck, DetectsAWrongGradient) {
  // A deliberately wrong backward must fail the check: the checker can fail.
  struct Wrong : Node {
    std::vector<Tensor> backward(const Tensor& g) override { return {tensor::scale(g, 2.0)}; }
    const char* name() const override { return "Wrong"; }
  };
  const GradcheckResult r = gradcheck(
      [](auto& v) { return make_result(v[0].data().clone(), std::make_shared<Wrong>(), {&v[0]}); },
      {rand({3, 2})});
  EXPECT_FALSE(r.ok);
}

}  // namespace
}  // namespace mlai::autograd
