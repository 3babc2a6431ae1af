// Mixed precision through the ResNet ops' autograd on the CPU: a float16/bfloat16 graph of
// conv -> batch norm (float32 parameters) gives gradients in each leaf's own dtype
// (half for x and the filter, float32 for gamma and beta) that match the float32 graph run on
// the same values, within a few roundings of the dtype (bounds 1e-2 fp16, 5e-2 bf16). Max
// pooling stays out: rounding can reorder near-equal maxima and move whole gradients.
#include <gtest/gtest.h>

#include <string>

#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

namespace t = mlai::tensor;

struct Grads {
  Tensor y, dx, dw, dgamma, dbeta;
};

Grads run(const Tensor& x0, const Tensor& w0, const Tensor& g0, const Tensor& b0,
          const Tensor& dy_seed, DType dt, bool training) {
  Variable x(t::cast(x0, dt), true), w(t::cast(w0, dt), true), gamma(g0.clone(), true),
      beta(b0.clone(), true);
  Tensor rm = Tensor::zeros({g0.numel()}), rv = Tensor::full({g0.numel()}, 1.5);
  Variable y = batchnorm(conv2d(x, w, Variable(), 1, 1), gamma, beta, rm, rv, training, 0.1, 1e-5);
  y.backward(t::cast(dy_seed, dt));
  return {y.data(), x.grad(), w.grad(), gamma.grad(), beta.grad()};
}

TEST(ConvHalfAutograd, HalfGraphMatchesFloatGraphWithFloatBatchNormParameters) {
  t::Generator gen{5};
  const Tensor x = Tensor::uniform({2, 9, 10, 3}, -1, 1, gen),
               w = Tensor::uniform({8, 3, 3, 3}, -1, 1, gen),
               g = Tensor::uniform({8}, 0.5, 1.5, gen), b = Tensor::uniform({8}, -1, 1, gen),
               dy = Tensor::uniform({2, 9, 10, 8}, -1, 1, gen);
  for (DType dt : {DType::kFloat16, DType::kBFloat16})
    for (bool training : {true, false}) {
      SCOPED_TRACE(std::string(t::dtype_name(dt)) + (training ? " training" : " evaluation"));
      // The float reference starts from the same rounded inputs.
      const Tensor xr = t::cast(t::cast(x, dt), DType::kFloat32),
                   wr = t::cast(t::cast(w, dt), DType::kFloat32),
                   dyr = t::cast(t::cast(dy, dt), DType::kFloat32);
      const Grads h = run(xr, wr, g, b, dyr, dt, training);
      const Grads f = run(xr, wr, g, b, dyr, DType::kFloat32, training);
      EXPECT_EQ(h.dx.dtype(), dt);
      EXPECT_EQ(h.dw.dtype(), dt);
      EXPECT_EQ(h.dgamma.dtype(), DType::kFloat32);
      EXPECT_EQ(h.dbeta.dtype(), DType::kFloat32);
      const double tol = dt == DType::kFloat16 ? 1e-2 : 5e-2;
      EXPECT_LE(t::max_rel_error(h.y, f.y), tol);
      EXPECT_LE(t::max_rel_error(h.dx, f.dx), tol);
      EXPECT_LE(t::max_rel_error(h.dw, f.dw), tol);
      EXPECT_LE(t::max_rel_error(h.dgamma, f.dgamma), tol);
      EXPECT_LE(t::max_rel_error(h.dbeta, f.dbeta), tol);
    }
}

}  // namespace
}  // namespace mlai::autograd
