// autograd::on_backward (ZeRO stage 3's unit hooks): the identity in value and in gradient
// (finite differences agree in float64); its function runs once per backward, after every node
// above it and before every node below it; nothing is recorded without a gradient to pass.
#include "autograd/hooks.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace mlai::autograd {
namespace {

using tensor::Generator;

TEST(OnBackward, IsTheIdentityForFiniteDifferences) {
  Generator g(11);
  int calls = 0;
  const GradcheckResult r = gradcheck(
      [&](const std::vector<Variable>& v) {
        return mul(on_backward(linear(v[0], v[1], v[2]), [&] { ++calls; }), v[0]);
      },
      {Tensor::uniform({3, 4}, -1, 1, g, DType::kFloat64),
       Tensor::uniform({4, 4}, -1, 1, g, DType::kFloat64),
       Tensor::uniform({4}, -1, 1, g, DType::kFloat64)});
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_GT(calls, 0);
}

// A unit's two hooks: `after` on its input, `before` on its output. Backward runs `before`,
// then the unit's product (whose weight gradient is final then), then `after`.
TEST(OnBackward, RunsOnceBetweenTheNodesAroundIt) {
  Generator g(3);
  Variable x(Tensor::uniform({2, 3}, -1, 1, g, DType::kFloat64), true);
  Variable w(Tensor::uniform({3, 3}, -1, 1, g, DType::kFloat64), true);
  std::vector<std::string> order;
  w.register_grad_ready_hook([&](Variable&) { order.push_back("weight"); });
  const Variable in = on_backward(mul(x, x), [&] { order.push_back("after"); });
  const Variable out = on_backward(linear(in, w, Variable()), [&] { order.push_back("before"); });
  const Variable y = sum(mul(out, out));
  EXPECT_EQ(out.data().to_double_vector(),
            linear(mul(x, x), w, Variable()).data().to_double_vector());
  y.backward();
  EXPECT_EQ(order, (std::vector<std::string>{"before", "weight", "after"}));
  // The same gradients as without the hooks.
  Variable x2(x.data(), true), w2(w.data(), true);
  const Variable o2 = linear(mul(x2, x2), w2, Variable());
  sum(mul(o2, o2)).backward();
  EXPECT_EQ(x.grad().to_double_vector(), x2.grad().to_double_vector());
  EXPECT_EQ(w.grad().to_double_vector(), w2.grad().to_double_vector());
}

TEST(OnBackward, RecordsNothingWithoutAGradientToPass) {
  int calls = 0;
  const Variable c(Tensor::full({2}, 1.0, DType::kFloat64));  // requires no gradient
  EXPECT_EQ(on_backward(c, [&] { ++calls; }).grad_fn(), nullptr);
  Variable x(Tensor::full({2}, 2.0, DType::kFloat64), true);
  {
    NoGradGuard no_grad;
    EXPECT_EQ(on_backward(x, [&] { ++calls; }).grad_fn(), nullptr);
  }
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace mlai::autograd
