// The backward engine: accumulation into leaves across passes and shared inputs, grad mode,
// and the gradient-ready hooks the data-parallel reducer relies on.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

Variable leaf(std::vector<double> v, Shape s) {
  return Variable(Tensor::from_vector(v, s), true);
}

TEST(Engine, AccumulatesAcrossUsesAndPasses) {
  Variable x = leaf({1, 2, 3}, {3});
  Variable y = sum(add(mul(x, x), x));  // d/dx = 2x + 1
  y.backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{3, 5, 7}));
  sum(x).backward();  // a second pass adds 1
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 6, 8}));
  x.zero_grad();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
}

TEST(Engine, ZeroGradKeepsTheBufferSoViewsStayViews) {
  Variable x = leaf({1, 2}, {2});
  Tensor bucket = Tensor::zeros({4}, DType::kFloat64);
  x.set_grad(bucket.slice(1, 3));
  sum(scale(x, 3.0)).backward();
  EXPECT_EQ(bucket.to_vector<double>(), (std::vector<double>{0, 3, 3, 0}));
}

TEST(Engine, NoGradGuardRecordsNothing) {
  Variable x = leaf({1, 2}, {2});
  {
    NoGradGuard g;
    Variable y = mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  EXPECT_TRUE(mul(x, x).requires_grad());
}

TEST(Engine, InputsWithoutGradGetNone) {
  Variable x = leaf({1, 2}, {2});
  Variable c(Tensor::from_vector(std::vector<double>{5, 7}, {2}), false);
  sum(mul(x, c)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{5, 7}));
  EXPECT_FALSE(c.grad().defined());
  EXPECT_THROW(sum(c).backward(), std::logic_error);
}

TEST(Engine, HooksFireOnceWhenTheLeafGradientIsFinal) {
  // w is used by two branches; its hook must fire once, after both contributions.
  Variable w = leaf({2.0}, {1, 1});
  Variable b = leaf({0.5}, {1});
  Variable x(Tensor::from_vector(std::vector<double>{3.0}, {1, 1}), false);
  std::vector<std::string> order;
  std::vector<double> w_grad_at_hook;
  w.register_grad_ready_hook([&](Variable& v) {
    order.push_back("w");
    w_grad_at_hook = v.grad().to_vector<double>();
  });
  b.register_grad_ready_hook([&](Variable&) { order.push_back("b"); });
  Variable h = linear(x, w, b, false);           // 3w + b
  Variable y = sum(add(matmul(h, w), h));        // (3w + b) w + 3w + b
  y.backward();                                  // dy/dw = 6w + b + 3 = 15.5
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(w_grad_at_hook, (std::vector<double>{15.5}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{3.0}));  // w + 1
}

TEST(Engine, BackwardNeedsAScalarOrASeed) {
  Variable x = leaf({1, 2}, {2});
  Variable y = scale(x, 2.0);
  EXPECT_THROW(y.backward(), std::invalid_argument);
  y.backward(Tensor::from_vector(std::vector<double>{1, 10}, {2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{2, 20}));
}

}  // namespace
}  // namespace mlai::autograd
