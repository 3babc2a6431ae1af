// autograd::checkpoint: the gradients of a checkpointed segment are those of the plain segment
// (bit for bit: the same ops run again), for its input and for the leaves it uses; finite
// differences agree in float64; the leaves' gradient-ready hooks fire once, with the final
// gradient, and earlier gradients accumulate; nothing is recorded without grad mode.
#include "autograd/checkpoint.h"

#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"

namespace mlai::autograd {
namespace {

using tensor::Generator;

// A two-layer segment: relu(x W1^T + b1) W2^T, with W1, b1, W2 leaves.
struct Segment {
  Variable w1, b1, w2;
  explicit Segment(DType dt, uint64_t seed) {
    Generator g(seed);
    w1 = Variable(Tensor::uniform({6, 5}, -1, 1, g, dt), true);
    b1 = Variable(Tensor::uniform({6}, -1, 1, g, dt), true);
    w2 = Variable(Tensor::uniform({3, 6}, -1, 1, g, dt), true);
  }
  Variable operator()(const Variable& x) const {
    return matmul(relu(linear(x, w1, b1)), w2, false, true);
  }
};

TEST(Checkpoint, GradientsAreThoseOfThePlainSegment) {
  for (DType dt : {DType::kFloat32, DType::kFloat64}) {
    Generator g(3);
    const Tensor xd = Tensor::uniform({4, 5}, -1, 1, g, dt);
    std::vector<std::vector<double>> grads[2];
    for (int ck = 0; ck < 2; ++ck) {
      Segment s(dt, 7);
      Variable x(xd, true);
      // Something before the segment, so that its input is not a leaf.
      const Variable h = mul(x, x);
      const Variable y = ck ? checkpoint([&](const Variable& in) { return s(in); }, h) : s(h);
      EXPECT_EQ(y.grad_fn() != nullptr, true);
      if (ck) {
        EXPECT_STREQ(y.grad_fn()->name(), "CheckpointBackward");
      }
      sum(mul(y, y)).backward();
      for (const Variable* v : {&x, &s.w1, &s.b1, &s.w2})
        grads[ck].push_back(v->grad().to_double_vector());
    }
    EXPECT_EQ(grads[1], grads[0]);
  }
}

TEST(Checkpoint, FiniteDifferencesAgreeInFloat64) {
  Generator g(5);
  const std::vector<Tensor> inputs = {Tensor::uniform({3, 5}, -1, 1, g, DType::kFloat64),
                                      Tensor::uniform({6, 5}, -1, 1, g, DType::kFloat64),
                                      Tensor::uniform({6}, -1, 1, g, DType::kFloat64)};
  const GradcheckResult r = gradcheck(
      [](const std::vector<Variable>& v) {
        return checkpoint([&](const Variable& in) { return relu(linear(in, v[1], v[2])); }, v[0]);
      },
      inputs);
  EXPECT_TRUE(r.ok) << r.message;
}

// The outer backward fires a leaf's hook once its checkpointed contribution has arrived, and
// adds that contribution to what the leaf held (gradient accumulation over micro-batches).
TEST(Checkpoint, LeafHooksFireOnceWithTheAccumulatedGradient) {
  Segment s(DType::kFloat64, 9);
  Generator g(1);
  const Tensor xd = Tensor::uniform({4, 5}, -1, 1, g, DType::kFloat64);
  // The plain gradient of one pass.
  Segment plain(DType::kFloat64, 9);
  sum(plain(Variable(xd))).backward();
  const auto once = plain.w1.grad().to_double_vector();

  s.w1.set_grad(Tensor::full({6, 5}, 0.5, DType::kFloat64));  // an earlier micro-batch's
  int fired = 0;
  std::vector<double> seen;
  s.w1.register_grad_ready_hook([&](Variable& v) {
    ++fired;
    seen = v.grad().to_double_vector();
  });
  sum(checkpoint([&](const Variable& in) { return s(in); }, Variable(xd))).backward();
  EXPECT_EQ(fired, 1);
  ASSERT_EQ(seen.size(), once.size());
  for (size_t i = 0; i < once.size(); ++i) EXPECT_DOUBLE_EQ(seen[i], 0.5 + once[i]) << i;
  // Hooks are kept for the next backward.
  sum(checkpoint([&](const Variable& in) { return s(in); }, Variable(xd))).backward();
  EXPECT_EQ(fired, 2);
}

TEST(Checkpoint, HooksRunAroundTheRecomputationOnly) {
  Segment s(DType::kFloat64, 11);
  Generator g(2);
  const Tensor xd = Tensor::uniform({2, 5}, -1, 1, g, DType::kFloat64);
  int before = 0, after = 0, runs = 0;
  RecomputeHooks hooks;
  hooks.before = [&] { ++before; };
  hooks.after = [&] { ++after; };
  const Variable y = checkpoint(
      [&](const Variable& in) {
        ++runs;
        return s(in);
      },
      Variable(xd), hooks);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(before, 0);
  sum(y).backward();
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(before, 1);
  EXPECT_EQ(after, 1);
  // Without grad mode nothing is recorded and nothing runs again.
  NoGradGuard no_grad;
  const Variable z = checkpoint([&](const Variable& in) { return s(in); }, Variable(xd), hooks);
  EXPECT_FALSE(z.requires_grad());
  EXPECT_EQ(before, 1);
}

}  // namespace
}  // namespace mlai::autograd
