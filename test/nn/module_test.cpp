// Modules: dotted parameter names, counts, init bounds, train/eval, dropout, the fused
// Linear+ReLU path in Sequential.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "nn/layers.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

std::shared_ptr<Sequential> tiny_mlp(Generator& g) {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Flatten>());
  s->add(std::make_shared<Linear>(12, 8, g));
  s->add(std::make_shared<ReLU>());
  s->add(std::make_shared<Linear>(8, 3, g));
  return s;
}

TEST(Module, NamesCountsAndInit) {
  Generator g(1);
  auto m = tiny_mlp(g);
  std::vector<std::string> names;
  for (auto& [n, v] : m->named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"1.weight", "1.bias", "3.weight", "3.bias"}));
  EXPECT_EQ(m->parameter_count(), 12 * 8 + 8 + 8 * 3 + 3);
  const double bound = 1 / std::sqrt(12.0);
  double lo = 1, hi = -1;
  for (double w : m->named_parameters()[0].second.data().to_double_vector()) {
    lo = std::min(lo, w);
    hi = std::max(hi, w);
  }
  EXPECT_GE(lo, -bound);
  EXPECT_LE(hi, bound);
  EXPECT_LT(lo, -0.8 * bound);  // spread over the whole range
  EXPECT_GT(hi, 0.8 * bound);
}

TEST(Module, FusedLinearReluMatchesUnfused) {
  Generator g(2);
  auto m = tiny_mlp(g);
  Tensor x = Tensor::normal({5, 3, 4}, 0, 1, g);
  Variable out = (*m)(Variable(x));
  // The same network step by step, without fusion.
  auto& ch = m->children();
  Variable h = ch[0].second->forward(Variable(x));
  h = ch[2].second->forward(ch[1].second->forward(h));
  h = ch[3].second->forward(h);
  EXPECT_LT(tensor::max_rel_error(out.data(), h.data()), 1e-6);
  autograd::sum(out).backward();
  for (auto& [n, v] : m->named_parameters()) EXPECT_TRUE(v.grad().defined()) << n;
  m->zero_grad();
  EXPECT_EQ(tensor::sum(m->parameters()[0].grad()).item(), 0.0);
}

TEST(Module, DropoutTrainsAndEvaluates) {
  Dropout d(0.25, 9);
  Tensor x = Tensor::full({100000}, 1.0);
  Variable y = d(Variable(x));
  const auto v = y.data().to_vector<float>();
  int64_t zeros = 0;
  for (float e : v) {
    if (e == 0) ++zeros;
    else ASSERT_FLOAT_EQ(e, 1.0f / 0.75f);
  }
  EXPECT_NEAR(static_cast<double>(zeros) / 100000, 0.25, 0.01);
  d.eval();
  EXPECT_EQ(d(Variable(x)).data().to_vector<float>(), x.to_vector<float>());
  EXPECT_THROW(Dropout(1.0, 1), std::invalid_argument);
}

TEST(Module, DropoutGradcheck) {
  const autograd::GradcheckResult r = autograd::gradcheck(
      [](const std::vector<Variable>& v) {
        Generator g(5);  // the same mask at every evaluation
        return autograd::dropout(v[0], 0.3, g);
      },
      {Tensor::normal({4, 6}, 0, 1, *std::make_unique<Generator>(3), DType::kFloat64)});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Module, LinearRejectsWrongInput) {
  Generator g(3);
  Linear l(4, 2, g);
  EXPECT_THROW(l(Variable(Tensor::zeros({3, 5}))), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
