// The CPU's float16/bfloat16 convolution, max pooling and batch norm (tensor/nn_ops.h) against
// the float32 ops on the same (already rounded) values. The half path computes in float32 and
// rounds once, so the only error is that final rounding: half an ulp, 2^-11 (fp16) or 2^-9
// (bf16) of each value; the bounds are twice that, relative to max |ref|. Batch-norm statistics
// and parameter gradients stay float32 and must agree exactly.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

const DType kHalves[] = {DType::kFloat16, DType::kBFloat16};
double rounding_tol(DType dt) { return dt == DType::kFloat16 ? 1e-3 : 4e-3; }
Tensor f32(const Tensor& t) { return cast(t, DType::kFloat32); }

class HalfCpu : public ::testing::Test {
 protected:
  Generator gen_{2024};
  Tensor rand(const Shape& s, DType dt, double lo = -1, double hi = 1) {
    return Tensor::uniform(s, lo, hi, gen_, dt);
  }
};

// y (half) against the float32 reference, and y really is in dtype dt.
#define EXPECT_ROUNDED(DT, HALF, REF)                                                     \
  do {                                                                                    \
    const Tensor h_ = (HALF), r_ = (REF);                                                 \
    EXPECT_EQ(h_.dtype(), DT);                                                            \
    EXPECT_LE(max_rel_error(h_, r_), rounding_tol(DT)) << dtype_name(DT) << " " << #HALF; \
  } while (0)

TEST_F(HalfCpu, Conv2dForwardAndBothBackwards) {
  struct G {
    int64_t n, h, w, cin, cout, k, stride, pad;
  };
  for (DType dt : kHalves)
    for (const G& g :
         {G{2, 9, 11, 3, 13, 3, 1, 1}, G{1, 12, 10, 13, 5, 3, 2, 1}, G{2, 15, 14, 3, 8, 7, 2, 3},
          G{3, 5, 7, 13, 13, 1, 1, 0}, G{2, 8, 9, 6, 4, 1, 2, 0}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " k" + std::to_string(g.k) + " s" +
                   std::to_string(g.stride) + " p" + std::to_string(g.pad));
      const Tensor x = rand({g.n, g.h, g.w, g.cin}, dt), w = rand({g.cout, g.k, g.k, g.cin}, dt),
                   b = rand({g.cout}, dt);
      const Tensor y = conv2d(x, w, b, g.stride, g.pad);
      EXPECT_ROUNDED(dt, y, conv2d(f32(x), f32(w), f32(b), g.stride, g.pad));
      EXPECT_ROUNDED(dt, conv2d(x, w, Tensor(), g.stride, g.pad),
                     conv2d(f32(x), f32(w), Tensor(), g.stride, g.pad));
      const Tensor dy = rand(y.shape(), dt);
      EXPECT_ROUNDED(dt, conv2d_backward_data(dy, w, x.shape(), g.stride, g.pad),
                     conv2d_backward_data(f32(dy), f32(w), x.shape(), g.stride, g.pad));
      const auto [dw, db] = conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, true);
      const auto [dw_ref, db_ref] =
          conv2d_backward_filter(f32(x), f32(dy), w.shape(), g.stride, g.pad, true);
      EXPECT_ROUNDED(dt, dw, dw_ref);
      EXPECT_ROUNDED(dt, db, db_ref);
      EXPECT_FALSE(
          conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, false).second.defined());
    }
}

TEST_F(HalfCpu, MaxPoolForwardIsExactAndBackwardRounds) {
  for (DType dt : kHalves)
    for (auto [k, s, p] : {std::tuple{3, 2, 1}, std::tuple{2, 2, 0}, std::tuple{3, 1, 1}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " k" + std::to_string(k));
      const Tensor x = rand({2, 9, 11, 13}, dt);
      const auto [y, idx] = maxpool2d(x, k, s, p);
      const auto [y_ref, idx_ref] = maxpool2d(f32(x), k, s, p);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(max_rel_error(y, y_ref), 0.0);  // the maxima are x's own values
      EXPECT_EQ(idx.to_vector<int64_t>(), idx_ref.to_vector<int64_t>());
      const Tensor dy = rand(y.shape(), dt);
      EXPECT_ROUNDED(dt, maxpool2d_backward(dy, Tensor(), Tensor(), idx, x.shape(), k, s, p),
                     maxpool2d_backward(f32(dy), Tensor(), Tensor(), idx, x.shape(), k, s, p));
    }
}

TEST_F(HalfCpu, BatchNormTrainEvalBackwardWithFloatParameters) {
  for (DType dt : kHalves)
    for (const Shape& shape : {Shape{4, 5, 6, 13}, Shape{37, 3}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(shape));
      const int64_t c = shape.back();
      const DType f = DType::kFloat32;
      const Tensor x = rand(shape, dt, -1, 3);  // a mean away from zero, as activations have
      const Tensor gamma = rand({c}, f, 0.5, 1.5), beta = rand({c}, f);
      const Tensor rm0 = rand({c}, f), rv0 = rand({c}, f, 0.5, 2);
      Tensor rm = rm0.clone(), rv = rv0.clone(), rm_ref = rm0.clone(), rv_ref = rv0.clone();
      const auto [y, mean, inv_std] = batchnorm_train(x, gamma, beta, rm, rv, 0.1, 1e-5);
      const auto [y_ref, mean_ref, inv_ref] =
          batchnorm_train(f32(x), gamma, beta, rm_ref, rv_ref, 0.1, 1e-5);
      EXPECT_ROUNDED(dt, y, y_ref);
      EXPECT_EQ(mean.dtype(), f);
      EXPECT_EQ(max_rel_error(mean, mean_ref), 0.0);
      EXPECT_EQ(max_rel_error(inv_std, inv_ref), 0.0);
      EXPECT_EQ(max_rel_error(rm, rm_ref), 0.0);
      EXPECT_EQ(max_rel_error(rv, rv_ref), 0.0);
      EXPECT_ROUNDED(dt, batchnorm_eval(x, gamma, beta, rm0, rv0, 1e-5),
                     batchnorm_eval(f32(x), gamma, beta, rm0, rv0, 1e-5));
      const Tensor dy = rand(shape, dt);
      const auto [dx, dgamma, dbeta] = batchnorm_backward(x, dy, gamma, mean, inv_std);
      const auto [dx_ref, dgamma_ref, dbeta_ref] =
          batchnorm_backward(f32(x), f32(dy), gamma, mean, inv_std);
      EXPECT_ROUNDED(dt, dx, dx_ref);
      EXPECT_EQ(dgamma.dtype(), f);
      EXPECT_EQ(max_rel_error(dgamma, dgamma_ref), 0.0);
      EXPECT_EQ(max_rel_error(dbeta, dbeta_ref), 0.0);
    }
}

TEST_F(HalfCpu, MismatchedDtypesAndMissingArgmaxAreClearErrors) {
  const Tensor xh = rand({2, 5, 5, 3}, DType::kFloat16), xf = f32(xh);
  const Tensor p16 = rand({3}, DType::kFloat16), p32 = f32(p16);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0);
  // Half x wants float32 parameters; float32 x wants float32 ones, not half.
  EXPECT_THROW(batchnorm_train(xh, p16, p16, rm, rv, 0.1, 1e-5), std::invalid_argument);
  EXPECT_THROW(batchnorm_eval(xf, p16, p16, rm, rv, 1e-5), std::invalid_argument);
  EXPECT_THROW(batchnorm_train(cast(xh, DType::kFloat64), p32, p32, rm, rv, 0.1, 1e-5),
               std::invalid_argument);
  EXPECT_THROW(conv2d(xh, rand({4, 3, 3, 3}, DType::kFloat32), Tensor(), 1, 1),
               std::invalid_argument);
  EXPECT_THROW(conv2d(xf, rand({4, 3, 3, 3}, DType::kFloat32), p32, 1, 1),
               std::invalid_argument);  // bias [3] for 4 output channels
  const Tensor dy = rand({2, 3, 3, 3}, DType::kFloat16);
  EXPECT_THROW(maxpool2d_backward(dy, Tensor(), Tensor(), Tensor(), xh.shape(), 3, 2, 1),
               std::invalid_argument);
  try {
    batchnorm_train(xh, p16, p16, rm, rv, 0.1, 1e-5);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("float32"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mlai::tensor
