// The fused batch norm y = act(bn(x) + z), act none, relu or relu6 (tensor/nn_ops.h
// batchnorm_act_*):
//  - on the CPU, against the unfused ops it replaces (batch norm, add, relu or relu6 and their
//    backwards) in float32/float64, and float16/bfloat16 against float32;
//  - on CUDA (mlai's kernels, not cuDNN), against the CPU twin on random data in every dtype,
//    including a large mean (the shifted sums must not cancel the variance), more rows than one
//    block holds and channel counts that are not a multiple of the tile or the 16-byte pack;
//    and bitwise reproducibility run to run. The CUDA tests skip without a GPU.
// Bounds, relative to max |ref|: float32 1e-5 (orders of summation differ), float64 1e-12,
// half 2e-3 and bf16 1e-2 (one ulp of the output); statistics and parameter gradients are
// float32 sums on both sides for float32/half x: 2e-5 and 1e-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

struct Combo {
  bool residual;
  BnAct act;
  std::string str() const {
    const char* names[] = {" no-act", " relu", " relu6"};
    return std::string(residual ? "+z" : "") + names[act.kind];
  }
  // gamma's range: wide enough under relu6 that some outputs pass 6 (the cap).
  double gamma_hi() const { return act.kind == BnAct::kRelu6 ? 4.5 : 1.5; }
};
const Combo kCombos[] = {{false, BnAct::kNone}, {false, BnAct::kRelu},  {true, BnAct::kNone},
                         {true, BnAct::kRelu},  {false, BnAct::kRelu6}, {true, BnAct::kRelu6}};

// The unfused activation and its backward at the pre-activation values.
Tensor act_forward(const Tensor& v, BnAct act) {
  if (act.kind == BnAct::kRelu) return relu(v);
  return act.kind == BnAct::kRelu6 ? relu6(v) : v;
}
Tensor act_backward(const Tensor& dy, const Tensor& pre, BnAct act) {
  if (act.kind == BnAct::kRelu) return relu_backward(dy, pre);
  return act.kind == BnAct::kRelu6 ? relu6_backward(dy, pre) : dy;
}

double tol(DType dt) {
  switch (dt) {
    case DType::kFloat64:
      return 1e-12;
    case DType::kFloat32:
      return 1e-5;
    case DType::kFloat16:
      return 2e-3;
    default:
      return 1e-2;
  }
}
double stats_tol(DType dt) {
  if (dt == DType::kFloat64) return 1e-12;
  return dt == DType::kFloat32 ? 2e-5 : 1e-4;
}
DType param_dtype(DType dt) { return dt == DType::kFloat64 ? dt : DType::kFloat32; }

class BatchNormActCpu : public ::testing::Test {
 protected:
  Generator gen_{5};
  Tensor rand(const Shape& s, DType dt, double lo = -1, double hi = 1) {
    return Tensor::uniform(s, lo, hi, gen_, dt);
  }
};

// The fused op and the three ops it replaces, forward and backward, on the same inputs.
TEST_F(BatchNormActCpu, MatchesBatchNormAddActivation) {
  for (DType dt : {DType::kFloat64, DType::kFloat32})
    for (const Combo& k : kCombos)
      for (bool training : {true, false}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + k.str() + (training ? " train" : " eval"));
        const Shape shape{3, 5, 4, 6};
        const Tensor x = rand(shape, dt, -1, 3), z = k.residual ? rand(shape, dt) : Tensor();
        const Tensor gamma = rand({6}, dt, 0.5, k.gamma_hi()), beta = rand({6}, dt);
        const Tensor rm0 = rand({6}, dt), rv0 = rand({6}, dt, 0.5, 2);
        Tensor rm1 = rm0.clone(), rv1 = rv0.clone(), rm2 = rm0.clone(), rv2 = rv0.clone();
        Tensor ref, y, mean, inv_std;
        if (training) {
          Tensor y0;
          std::tie(y0, mean, inv_std) = batchnorm_train(x, gamma, beta, rm1, rv1, 0.1, 1e-5);
          ref = y0;
          Tensor m2, s2;
          std::tie(y, m2, s2) = batchnorm_act_train(x, gamma, beta, z, k.act, rm2, rv2, 0.1, 1e-5);
          EXPECT_LE(max_rel_error(m2, mean), tol(dt));
          EXPECT_LE(max_rel_error(s2, inv_std), tol(dt));
          EXPECT_LE(max_rel_error(rm2, rm1), tol(dt));
          EXPECT_LE(max_rel_error(rv2, rv1), tol(dt));
        } else {
          ref = batchnorm_eval(x, gamma, beta, rm0, rv0, 1e-5);
          y = batchnorm_act_eval(x, gamma, beta, rm0, rv0, z, k.act, 1e-5);
        }
        if (k.residual) ref = add(ref, z);
        const Tensor pre = ref;
        ref = act_forward(ref, k.act);
        EXPECT_LE(max_rel_error(y, ref), tol(dt));
        if (k.act.kind == BnAct::kRelu6) {  // (the cap is reached: its mask is tested)
          const std::vector<double> v = y.to_double_vector();
          EXPECT_GT(std::count(v.begin(), v.end(), 6.0), 0);
        }
        if (!training) continue;
        // Backward: dy through the activation's mask, then batch norm's backward; dz is the
        // masked dy.
        const Tensor dy = rand(shape, dt);
        const Tensor g = act_backward(dy, pre, k.act);
        const auto [dx, dgamma, dbeta] = batchnorm_backward(x, g, gamma, mean, inv_std);
        const BatchNormGrads f = batchnorm_act_backward(x, dy, gamma, mean, inv_std,
                                                        k.act ? y : Tensor(), k.residual, k.act);
        EXPECT_LE(max_rel_error(f.dx, dx), tol(dt));
        EXPECT_LE(max_rel_error(f.dgamma, dgamma), tol(dt));
        EXPECT_LE(max_rel_error(f.dbeta, dbeta), tol(dt));
        EXPECT_EQ(f.dz.defined(), k.residual);
        if (k.residual) {
          EXPECT_LE(max_rel_error(f.dz, g), 0.0);
        }
      }
}

// float16/bfloat16 x: float32 maths, rounded once, so within one output ulp of the float path.
TEST_F(BatchNormActCpu, HalfTypesFollowFloat) {
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Shape shape{4, 3, 3, 5};
    const Tensor x = rand(shape, dt, -1, 3), z = rand(shape, dt);
    const Tensor gamma = rand({5}, DType::kFloat32, 0.5, 1.5), beta = rand({5}, DType::kFloat32);
    Tensor rm = Tensor::zeros({5}), rv = Tensor::full({5}, 1.0), rmf = rm.clone(), rvf = rv.clone();
    const auto [y, mean, inv_std] = batchnorm_act_train(x, gamma, beta, z, true, rm, rv, 0.1, 1e-5);
    const auto [yf, meanf, inv_stdf] = batchnorm_act_train(
        cast(x, DType::kFloat32), gamma, beta, cast(z, DType::kFloat32), true, rmf, rvf, 0.1, 1e-5);
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_EQ(mean.dtype(), DType::kFloat32);
    EXPECT_LE(max_rel_error(cast(y, DType::kFloat32), yf), tol(dt));
    EXPECT_LE(max_rel_error(mean, meanf), 0.0);
    const Tensor dy = rand(shape, dt);
    const BatchNormGrads g = batchnorm_act_backward(x, dy, gamma, mean, inv_std, y, true);
    const BatchNormGrads gf =
        batchnorm_act_backward(cast(x, DType::kFloat32), cast(dy, DType::kFloat32), gamma, mean,
                               inv_std, cast(y, DType::kFloat32), true);
    EXPECT_EQ(g.dx.dtype(), dt);
    EXPECT_LE(max_rel_error(cast(g.dx, DType::kFloat32), gf.dx), tol(dt));
    EXPECT_LE(max_rel_error(g.dgamma, gf.dgamma), 0.0);
    EXPECT_LE(max_rel_error(cast(g.dz, DType::kFloat32), gf.dz), 0.0);
  }
}

TEST_F(BatchNormActCpu, BadResidualIsAClearError) {
  const Tensor x = rand({4, 3}, DType::kFloat32), gamma = Tensor::full({3}, 1.0),
               beta = Tensor::zeros({3});
  Tensor rm, rv;
  try {
    batchnorm_act_train(x, gamma, beta, rand({4, 2}, DType::kFloat32), true, rm, rv, 0.1, 1e-5);
    FAIL() << "a residual of the wrong shape was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("residual"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      batchnorm_act_train(x, gamma, beta, rand({4, 3}, DType::kFloat64), true, rm, rv, 0.1, 1e-5),
      std::invalid_argument);
}

// ---- CUDA ---------------------------------------------------------------------------------------

const Device kGpu = Device::cuda(0);

class BatchNormActCuda : public BatchNormActCpu {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
};

#define EXPECT_GPU_NEAR(GPU, CPU, TOL)               \
  do {                                               \
    const Tensor g_ = (GPU), c_ = (CPU);             \
    EXPECT_TRUE(g_.device().is_cuda()) << #GPU;      \
    EXPECT_EQ(g_.dtype(), c_.dtype()) << #GPU;       \
    EXPECT_LE(max_rel_error(g_, c_), (TOL)) << #GPU; \
  } while (0)

// Shapes: one block of rows and less than a tile of channels; odd channel counts over two
// tiles; more rows than a block holds (8192 x 64, ResNet's first stage at batch 8); and a
// channel count that is not a multiple of the 16-byte pack in any dtype (so the scalar path).
const Shape kShapes[] = {Shape{6, 5, 5, 3}, Shape{4, 7, 9, 37}, Shape{8, 32, 32, 64},
                         Shape{2, 9, 9, 13}};

TEST_F(BatchNormActCuda, MatchesTheCpuTwin) {
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16})
    for (const Shape& shape : kShapes)
      for (const Combo& k : kCombos)
        for (double offset : {0.0, 100.0}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(shape) + k.str() + " offset " +
                       std::to_string(offset));
          const int64_t c = shape.back();
          const DType pdt = param_dtype(dt);
          // bf16 keeps 8 bits: an offset of 100 would leave too little of x to normalise.
          const double off = dt == DType::kBFloat16 ? offset / 50 : offset;
          const Tensor x = rand(shape, dt, off - 1, off + 3), gx = x.to(kGpu);
          const Tensor z = k.residual ? rand(shape, dt) : Tensor();
          const Tensor gz = k.residual ? z.to(kGpu) : Tensor();
          const Tensor gamma = rand({c}, pdt, 0.5, k.gamma_hi()), beta = rand({c}, pdt);
          const Tensor rm0 = rand({c}, pdt), rv0 = rand({c}, pdt, 0.5, 2);
          Tensor rm = rm0.clone(), rv = rv0.clone(), grm = rm0.to(kGpu), grv = rv0.to(kGpu);
          const Tensor ggamma = gamma.to(kGpu), gbeta = beta.to(kGpu);
          const auto [y, mean, inv_std] =
              batchnorm_act_train(x, gamma, beta, z, k.act, rm, rv, 0.1, 1e-5);
          const auto [gy, gmean, ginv] =
              batchnorm_act_train(gx, ggamma, gbeta, gz, k.act, grm, grv, 0.1, 1e-5);
          EXPECT_GPU_NEAR(gy, y, std::max(tol(dt), stats_tol(dt)));
          EXPECT_GPU_NEAR(gmean, mean, stats_tol(dt));
          EXPECT_GPU_NEAR(ginv, inv_std, stats_tol(dt) * (offset > 0 ? 10 : 1));
          EXPECT_GPU_NEAR(grm, rm, stats_tol(dt));
          EXPECT_GPU_NEAR(grv, rv, stats_tol(dt) * (offset > 0 ? 10 : 1));
          EXPECT_GPU_NEAR(
              batchnorm_act_eval(gx, ggamma, gbeta, rm0.to(kGpu), rv0.to(kGpu), gz, k.act, 1e-5),
              batchnorm_act_eval(x, gamma, beta, rm0, rv0, z, k.act, 1e-5), tol(dt));
          // Backward from the same saved statistics and mask on both sides.
          const Tensor dy = rand(shape, dt);
          const Tensor mask = k.act ? y : Tensor();
          const BatchNormGrads c_g =
              batchnorm_act_backward(x, dy, gamma, mean, inv_std, mask, k.residual, k.act);
          const BatchNormGrads g_g =
              batchnorm_act_backward(gx, dy.to(kGpu), ggamma, mean.to(kGpu), inv_std.to(kGpu),
                                     k.act ? y.to(kGpu) : Tensor(), k.residual, k.act);
          EXPECT_GPU_NEAR(g_g.dx, c_g.dx, std::max(tol(dt), stats_tol(dt)));
          EXPECT_GPU_NEAR(g_g.dgamma, c_g.dgamma, stats_tol(dt));
          EXPECT_GPU_NEAR(g_g.dbeta, c_g.dbeta, stats_tol(dt));
          if (k.residual) {
            EXPECT_GPU_NEAR(g_g.dz, c_g.dz, 0.0);  // the masked dy: exact
          }
        }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data_ptr(), hb.data_ptr(), ha.nbytes()) == 0;
}

// No atomics: the same inputs give the same bits on every run.
TEST_F(BatchNormActCuda, IsBitwiseReproducible) {
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    const Shape shape{16, 32, 32, 64};
    const Tensor x = rand(shape, dt).to(kGpu), z = rand(shape, dt).to(kGpu);
    const Tensor gamma = rand({64}, DType::kFloat32).to(kGpu), beta = gamma;
    Tensor rm, rv;
    const auto [y1, m1, s1] = batchnorm_act_train(x, gamma, beta, z, true, rm, rv, 0.1, 1e-5);
    const auto [y2, m2, s2] = batchnorm_act_train(x, gamma, beta, z, true, rm, rv, 0.1, 1e-5);
    EXPECT_TRUE(bitwise_equal(y1, y2));
    EXPECT_TRUE(bitwise_equal(s1, s2));
    const Tensor dy = rand(shape, dt).to(kGpu);
    const BatchNormGrads a = batchnorm_act_backward(x, dy, gamma, m1, s1, y1, true);
    const BatchNormGrads b = batchnorm_act_backward(x, dy, gamma, m1, s1, y1, true);
    EXPECT_TRUE(bitwise_equal(a.dx, b.dx));
    EXPECT_TRUE(bitwise_equal(a.dgamma, b.dgamma));
  }
}

}  // namespace
}  // namespace mlai::tensor
