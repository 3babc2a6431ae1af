// Modules: dotted parameter names, counts, init bounds, train/eval, dropout, the fused
// Linear+ReLU and BatchNorm2d+ReLU/ReLU6 paths in Sequential.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/gradcheck.h"
#include "nn/conv_layers.h"
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

// Sequential runs BatchNorm2d and a ReLU or ReLU6 after it as one op: the same outputs, input
// gradients and running statistics as the modules one by one (training and evaluation).
TEST(Module, FusedBatchNormActivationMatchesUnfused) {
  for (bool six : {false, true})
    for (bool training : {true, false}) {
      SCOPED_TRACE(std::string(six ? "ReLU6" : "ReLU") + (training ? " train" : " eval"));
      auto make = [&] {
        auto s = std::make_shared<Sequential>();
        s->add(std::make_shared<BatchNorm2d>(5));
        if (six) {
          s->add(std::make_shared<ReLU6>());
        } else {
          s->add(std::make_shared<ReLU>());
        }
        s->train(training);
        return s;
      };
      auto fused = make(), plain = make();
      Generator g(3);
      // Wide enough that ReLU6 clips some outputs at 6 (the weight scales them up).
      for (auto* m : {fused.get(), plain.get()}) tensor::fill_(m->parameters()[0].data(), 4.0);
      const Tensor x = Tensor::normal({4, 3, 3, 5}, 1, 2, g),
                   dy = Tensor::normal({4, 3, 3, 5}, 0, 1, g);
      Variable xf(x, true), xp(x.clone(), true);
      Variable yf = (*fused)(xf);
      auto& ch = plain->children();
      Variable yp = ch[1].second->forward(ch[0].second->forward(xp));
      EXPECT_LT(tensor::max_rel_error(yf.data(), yp.data()), 1e-5);
      if (six) {
        const auto v = yf.data().to_double_vector();
        EXPECT_GT(std::count(v.begin(), v.end(), 6.0), 0);
      }
      yf.backward(dy);
      yp.backward(dy);
      EXPECT_LT(tensor::max_rel_error(xf.grad(), xp.grad()), 1e-5);
      const auto bf = fused->named_buffers(), bp = plain->named_buffers();
      for (size_t i = 0; i < bf.size(); ++i)
        EXPECT_LT(tensor::max_rel_error(*bf[i].second, *bp[i].second), 1e-6) << bf[i].first;
    }
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
