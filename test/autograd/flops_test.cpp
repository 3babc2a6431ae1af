// autograd's FLOP count: each matrix product that runs adds 2 x its multiply-adds, as
// torch.utils.flop_counter.FlopCounterMode counts (bias adds and everything elementwise free),
// and a backward product that is not computed (no gradient wanted) adds nothing.
#include <gtest/gtest.h>

#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

using tensor::Generator;

Tensor random(const Shape& shape, Generator& gen) {
  return Tensor::uniform(shape, -1.0, 1.0, gen, DType::kFloat32);
}

// The FLOPs `work` counted.
template <class F>
int64_t counted(F work) {
  const int64_t before = flop_count();
  work();
  return flop_count() - before;
}

TEST(FlopCount, LinearCountsEachProductThatRuns) {
  Generator gen(1);
  const Variable w(random({5, 6}, gen), true), b(random({5}, gen), true);
  const int64_t product = 2 * 4 * 6 * 5;  // [4, 6] x [6, 5]
  for (const bool relu : {false, true}) {
    const Variable x(random({4, 6}, gen), true);
    Variable y;
    EXPECT_EQ(counted([&] { y = linear(x, w, b, relu); }), product);
    EXPECT_EQ(counted([&] { sum(y).backward(); }), 2 * product);  // dx and dw
  }
  const Variable input(random({4, 6}, gen));  // (no gradient: the data)
  Variable y;
  EXPECT_EQ(counted([&] { y = linear(input, w, b); }), product);
  EXPECT_EQ(counted([&] { sum(y).backward(); }), product);  // dw only
  const Variable frozen(random({5, 6}, gen));
  EXPECT_EQ(counted([&] { y = linear(input, frozen, Variable()); }), product);
  EXPECT_FALSE(y.requires_grad());
}

TEST(FlopCount, MatmulCountsTwiceMNK) {
  Generator gen(2);
  const Variable a(random({7, 3}, gen), true), b(random({5, 7}, gen), true);
  Variable c;
  // C[3, 5] = A^T [3, 7] B^T [7, 5]
  EXPECT_EQ(counted([&] { c = matmul(a, b, true, true); }), 2 * 3 * 7 * 5);
  EXPECT_EQ(counted([&] { sum(c).backward(); }), 2 * (2 * 3 * 7 * 5));
  // One side transposed: C[3, 4] = A^T [3, 7] B [7, 4].
  const Variable b2(random({7, 4}, gen), true);
  EXPECT_EQ(counted([&] { c = matmul(a, b2, true, false); }), 2 * 3 * 7 * 4);
  EXPECT_EQ(counted([&] { sum(c).backward(); }), 2 * (2 * 3 * 7 * 4));
}

TEST(FlopCount, ConvCountsEachPassThatRuns) {
  Generator gen(3);
  const Variable w(random({4, 3, 3, 2}, gen), true), b(random({4}, gen), true);  // OHWI
  for (const int64_t stride : {int64_t{1}, int64_t{2}}) {
    SCOPED_TRACE(stride);
    const Variable x(random({2, 5, 5, 2}, gen), true);  // NHWC
    const int64_t out = stride == 1 ? 5 : 3;            // padding 1
    const int64_t forward = 2 * (2 * out * out * 4) * (3 * 3 * 2);
    Variable y;
    EXPECT_EQ(counted([&] { y = conv2d(x, w, b, stride, 1); }), forward);
    EXPECT_EQ(counted([&] { sum(y).backward(); }), 2 * forward);  // data and filter
  }
  const Variable image(random({2, 5, 5, 2}, gen));  // the first layer: no data gradient
  Variable y;
  const int64_t forward = 2 * (2 * 5 * 5 * 4) * (3 * 3 * 2);
  EXPECT_EQ(counted([&] { y = conv2d(image, w, Variable(), 1, 1); }), forward);
  EXPECT_EQ(counted([&] { sum(y).backward(); }), forward);
  // Elementwise work, pooling and reductions are free.
  const Variable z(random({2, 4, 4, 3}, gen), true);
  EXPECT_EQ(counted([&] { sum(global_avgpool(relu(maxpool2d(z, 2, 2, 0)))).backward(); }), 0);
}

}  // namespace
}  // namespace mlai::autograd
