// The cuDNN convolution, max pooling and batch norm (tensor/nn_ops.h on CUDA tensors) against
// their CPU twins on the same random inputs, in float32, float16 and bfloat16, plus
// deterministic mode giving bitwise-identical results run to run. Skips (never falls back to
// the CPU) where there is no GPU or the build has no CUDA.
//
// Bounds, relative to max |ref|: float32 1e-5 (FMA math, no TF32: only the summation order
// differs), 1e-4 for convolutions (the fastest algorithm may be a Winograd or FFT one, whose
// transforms lose a few more bits than direct summation; PyTorch lets cudnn.benchmark pick them
// too); half 2e-3 and bf16 1e-2: both sides accumulate in float and round the result once, so
// they may differ by one ulp of the output (2^-10 and 2^-7). Pooling is exact.
// Batch-norm statistics and parameter gradients are float32 sums on both sides: 2e-5 for
// float32 x, 1e-4 for half/bf16 x (cuDNN's reduction order and variance formula differ).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/gemm.h"
#include "tensor/determinism.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

const Device kGpu = Device::cuda(0);
const DType kDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

double tol(DType dt) {
  switch (dt) {
    case DType::kFloat32:
      return 1e-5;
    case DType::kFloat16:
      return 2e-3;
    default:
      return 1e-2;
  }
}
double conv_tol(DType dt) { return dt == DType::kFloat32 ? 1e-4 : tol(dt); }
double stats_tol(DType dt) { return dt == DType::kFloat32 ? 2e-5 : 1e-4; }
DType param_dtype(DType dt) { return dt == DType::kFloat64 ? dt : DType::kFloat32; }

class CudnnVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
  Generator gen_{77};
  Tensor rand(const Shape& s, DType dt, double lo = -1, double hi = 1) {
    return Tensor::uniform(s, lo, hi, gen_, dt);
  }
};

#define EXPECT_GPU_NEAR(GPU, CPU, TOL)               \
  do {                                               \
    const Tensor g_ = (GPU), c_ = (CPU);             \
    EXPECT_TRUE(g_.device().is_cuda()) << #GPU;      \
    EXPECT_EQ(g_.dtype(), c_.dtype()) << #GPU;       \
    EXPECT_LE(max_rel_error(g_, c_), (TOL)) << #GPU; \
  } while (0)

struct ConvCase {
  int64_t n, h, w, cin, cout, k, stride, pad;
  std::string str() const {
    char buf[96];  // (not "n" + std::to_string(...): GCC 12 warns falsely about that inlined)
    std::snprintf(buf, sizeof(buf), "n%lld %lldx%lldx%lld->%lld k%lld s%lld p%lld",
                  static_cast<long long>(n), static_cast<long long>(h), static_cast<long long>(w),
                  static_cast<long long>(cin), static_cast<long long>(cout),
                  static_cast<long long>(k), static_cast<long long>(stride),
                  static_cast<long long>(pad));
    return buf;
  }
};
// 1x1, 3x3 and 7x7; strides 1 and 2; pads 0, 1 and 3; odd sizes and channel counts.
const ConvCase kConvCases[] = {{2, 9, 11, 3, 13, 3, 1, 1},  {2, 12, 10, 13, 8, 3, 2, 1},
                               {1, 15, 14, 3, 16, 7, 2, 3}, {3, 7, 9, 13, 5, 1, 1, 0},
                               {2, 8, 9, 16, 13, 1, 2, 0},  {2, 10, 9, 8, 13, 3, 2, 0},
                               {2, 16, 16, 32, 32, 3, 1, 1}};

TEST_F(CudnnVsCpu, Conv2dForwardAndBothBackwards) {
  for (DType dt : kDtypes)
    for (const ConvCase& g : kConvCases) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + g.str());
      const Tensor x = rand({g.n, g.h, g.w, g.cin}, dt), w = rand({g.cout, g.k, g.k, g.cin}, dt),
                   b = rand({g.cout}, dt);
      const Tensor gx = x.to(kGpu), gw = w.to(kGpu), gb = b.to(kGpu);
      const Tensor y = conv2d(x, w, b, g.stride, g.pad);
      EXPECT_GPU_NEAR(conv2d(gx, gw, gb, g.stride, g.pad), y, conv_tol(dt));
      EXPECT_GPU_NEAR(conv2d(gx, gw, Tensor(), g.stride, g.pad),
                      conv2d(x, w, Tensor(), g.stride, g.pad), conv_tol(dt));
      const Tensor dy = rand(y.shape(), dt), gdy = dy.to(kGpu);
      EXPECT_GPU_NEAR(conv2d_backward_data(gdy, gw, x.shape(), g.stride, g.pad),
                      conv2d_backward_data(dy, w, x.shape(), g.stride, g.pad), conv_tol(dt));
      for (bool want_bias : {true, false}) {
        const auto [dw, db] = conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, want_bias);
        const auto [gdw, gdb] =
            conv2d_backward_filter(gx, gdy, w.shape(), g.stride, g.pad, want_bias);
        EXPECT_GPU_NEAR(gdw, dw, conv_tol(dt));
        EXPECT_EQ(gdb.defined(), want_bias);
        if (want_bias) EXPECT_GPU_NEAR(gdb, db, conv_tol(dt));
      }
    }
}

// Grouped and depthwise convolutions (cuDNN's group count, filters of c_in / groups channels)
// against the CPU's grouped GEMMs and depthwise kernel, in every dtype, with --deterministic
// and cuDNN's heuristic choice too: ResNeXt's 32 groups, MobileNet's depthwise 3x3 at strides
// 1 and 2, a 5x5 depthwise filter, and a 1x1 grouped layer.
TEST_F(CudnnVsCpu, GroupedAndDepthwiseConv2d) {
  struct GroupedCase {
    int64_t n, h, w, cin, cout, k, stride, pad, groups;
  };
  const GroupedCase cases[] = {{2, 16, 16, 128, 128, 3, 1, 1, 32}, {2, 9, 11, 12, 8, 3, 2, 1, 4},
                               {3, 12, 12, 32, 32, 3, 1, 1, 32},   {2, 13, 11, 24, 24, 3, 2, 1, 24},
                               {2, 14, 14, 40, 40, 5, 2, 2, 40},   {2, 7, 9, 12, 18, 1, 1, 0, 3}};
  for (bool det : {false, true}) {
    set_deterministic(det);
    for (DType dt : kDtypes)
      for (const GroupedCase& g : cases) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + (det ? " deterministic " : " ") +
                     std::to_string(g.cin) + "->" + std::to_string(g.cout) + " groups " +
                     std::to_string(g.groups) + " k" + std::to_string(g.k) + " s" +
                     std::to_string(g.stride));
        const Tensor x = rand({g.n, g.h, g.w, g.cin}, dt),
                     w = rand({g.cout, g.k, g.k, g.cin / g.groups}, dt), b = rand({g.cout}, dt);
        const Tensor gx = x.to(kGpu), gw = w.to(kGpu), gb = b.to(kGpu);
        const Tensor y = conv2d(x, w, b, g.stride, g.pad, g.groups);
        EXPECT_GPU_NEAR(conv2d(gx, gw, gb, g.stride, g.pad, g.groups), y, conv_tol(dt));
        const Tensor dy = rand(y.shape(), dt), gdy = dy.to(kGpu);
        EXPECT_GPU_NEAR(conv2d_backward_data(gdy, gw, x.shape(), g.stride, g.pad, g.groups),
                        conv2d_backward_data(dy, w, x.shape(), g.stride, g.pad, g.groups),
                        conv_tol(dt));
        const auto [dw, db] =
            conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, true, g.groups);
        const auto [gdw, gdb] =
            conv2d_backward_filter(gx, gdy, w.shape(), g.stride, g.pad, true, g.groups);
        EXPECT_GPU_NEAR(gdw, dw, conv_tol(dt));
        EXPECT_GPU_NEAR(gdb, db, conv_tol(dt));
      }
  }
  set_deterministic(false);
}

// Operands at an odd element offset (views into a larger buffer) are only 2- or 4-byte aligned;
// the algorithm cache keys on alignment, so they get a search of their own instead of reusing
// the choice made for the allocator's 256-byte-aligned buffers of the same shape.
TEST_F(CudnnVsCpu, Conv2dOnMisalignedViews) {
  const ConvCase g{2, 12, 10, 16, 16, 3, 1, 1};
  auto misaligned = [](const Tensor& t) {  // the same values, one element into a bigger buffer
    Tensor flat = Tensor::zeros({t.numel() + 1}, t.dtype(), t.device());
    Tensor view = flat.slice(1, t.numel() + 1).reshape(t.shape());
    view.copy_from(t);
    return view;
  };
  for (DType dt : kDtypes) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor x = rand({g.n, g.h, g.w, g.cin}, dt), w = rand({g.cout, g.k, g.k, g.cin}, dt);
    const Tensor gx = x.to(kGpu), gw = w.to(kGpu);
    const Tensor y = conv2d(x, w, Tensor(), g.stride, g.pad);
    EXPECT_GPU_NEAR(conv2d(gx, gw, Tensor(), g.stride, g.pad), y, conv_tol(dt));  // aligned first
    EXPECT_GPU_NEAR(conv2d(misaligned(gx), misaligned(gw), Tensor(), g.stride, g.pad), y,
                    conv_tol(dt));
    const Tensor dy = rand(y.shape(), dt), gdy = misaligned(dy.to(kGpu));
    EXPECT_GPU_NEAR(conv2d_backward_data(gdy, misaligned(gw), x.shape(), g.stride, g.pad),
                    conv2d_backward_data(dy, w, x.shape(), g.stride, g.pad), conv_tol(dt));
    EXPECT_GPU_NEAR(
        conv2d_backward_filter(misaligned(gx), gdy, w.shape(), g.stride, g.pad, false).first,
        conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, false).first, conv_tol(dt));
  }
}

// Distinct values within every channel plane (small integers over 16, exact in bf16 too), so
// no window has a tie and both backends route each gradient to the same input.
Tensor distinct_planes(int64_t n, int64_t h, int64_t w, int64_t c, DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<double> v(static_cast<size_t>(n * h * w * c));
  std::vector<int> perm(static_cast<size_t>(h * w));
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch) {
      std::iota(perm.begin(), perm.end(), -static_cast<int>(h * w / 2));
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t i = 0; i < h * w; ++i)
        v[static_cast<size_t>((b * h * w + i) * c + ch)] = perm[i] / 16.0;
    }
  return cast(Tensor::from_vector(v, {n, h, w, c}), dt);
}

TEST_F(CudnnVsCpu, MaxPoolForwardAndBackward) {
  for (DType dt : kDtypes)
    for (auto [k, s, p] : {std::tuple{3, 2, 1}, std::tuple{2, 2, 0}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " k" + std::to_string(k) + " s" +
                   std::to_string(s) + " p" + std::to_string(p));
      const Tensor x = distinct_planes(2, 9, 11, 13, dt, 5), gx = x.to(kGpu);
      const auto [y, idx] = maxpool2d(x, k, s, p);
      const auto [gy, gidx] = maxpool2d(gx, k, s, p);
      EXPECT_FALSE(gidx.defined());  // cuDNN needs no argmax
      EXPECT_GPU_NEAR(gy, y, 0.0);   // a maximum is exact
      const Tensor dy = rand(y.shape(), dt);
      EXPECT_GPU_NEAR(maxpool2d_backward(dy.to(kGpu), gx, gy, Tensor(), x.shape(), k, s, p),
                      maxpool2d_backward(dy, Tensor(), Tensor(), idx, x.shape(), k, s, p), tol(dt));
    }
}

TEST_F(CudnnVsCpu, BatchNormTrainEvalBackward) {
  for (DType dt : kDtypes)
    for (const Shape& shape : {Shape{4, 7, 9, 13}, Shape{6, 5, 5, 3}, Shape{37, 13}}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(shape));
      const int64_t c = shape.back();
      const DType pdt = param_dtype(dt);
      const Tensor x = rand(shape, dt, -1, 3), gx = x.to(kGpu);
      const Tensor gamma = rand({c}, pdt, 0.5, 1.5), beta = rand({c}, pdt);
      const Tensor rm0 = rand({c}, pdt), rv0 = rand({c}, pdt, 0.5, 2);
      Tensor rm = rm0.clone(), rv = rv0.clone(), grm = rm0.to(kGpu), grv = rv0.to(kGpu);
      const Tensor ggamma = gamma.to(kGpu), gbeta = beta.to(kGpu);
      const auto [y, mean, inv_std] = batchnorm_train(x, gamma, beta, rm, rv, 0.1, 1e-5);
      const auto [gy, gmean, ginv] = batchnorm_train(gx, ggamma, gbeta, grm, grv, 0.1, 1e-5);
      EXPECT_GPU_NEAR(gy, y, tol(dt));
      EXPECT_GPU_NEAR(gmean, mean, stats_tol(dt));
      EXPECT_GPU_NEAR(ginv, inv_std, stats_tol(dt));
      EXPECT_GPU_NEAR(grm, rm, stats_tol(dt));
      EXPECT_GPU_NEAR(grv, rv, stats_tol(dt));  // the unbiased variance, on both sides
      EXPECT_GPU_NEAR(batchnorm_eval(gx, ggamma, gbeta, rm0.to(kGpu), rv0.to(kGpu), 1e-5),
                      batchnorm_eval(x, gamma, beta, rm0, rv0, 1e-5), tol(dt));
      const Tensor dy = rand(shape, dt);
      const auto [dx, dgamma, dbeta] = batchnorm_backward(x, dy, gamma, mean, inv_std);
      const auto [gdx, gdgamma, gdbeta] =
          batchnorm_backward(gx, dy.to(kGpu), ggamma, mean.to(kGpu), inv_std.to(kGpu));
      // dx sums dy and dy * xhat over rows before scaling: a float32 reduction on both sides.
      EXPECT_GPU_NEAR(gdx, dx, std::max(tol(dt), stats_tol(dt)));
      EXPECT_GPU_NEAR(gdgamma, dgamma, stats_tol(dt));
      EXPECT_GPU_NEAR(gdbeta, dbeta, stats_tol(dt));
    }
}

// Copies to the host and compares bytes: "deterministic" means bitwise, not within a bound.
bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data_ptr(), hb.data_ptr(), ha.nbytes()) == 0;
}

struct DeterministicScope {
  DeterministicScope() { set_deterministic(true); }
  ~DeterministicScope() { set_deterministic(false); }
};

TEST_F(CudnnVsCpu, DeterministicModeIsBitwiseReproducible) {
  DeterministicScope scope;
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    SCOPED_TRACE(dtype_name(dt));
    // Large enough that non-deterministic algorithms (atomics, split reductions) would be used.
    const Tensor x = rand({8, 32, 32, 64}, dt).to(kGpu), w = rand({64, 3, 3, 64}, dt).to(kGpu);
    const Tensor y1 = conv2d(x, w, Tensor(), 1, 1), y2 = conv2d(x, w, Tensor(), 1, 1);
    EXPECT_TRUE(bitwise_equal(y1, y2));
    const Tensor dy = rand(y1.shape(), dt).to(kGpu);
    EXPECT_TRUE(bitwise_equal(conv2d_backward_data(dy, w, x.shape(), 1, 1),
                              conv2d_backward_data(dy, w, x.shape(), 1, 1)));
    const auto [dw1, db1] = conv2d_backward_filter(x, dy, w.shape(), 1, 1, true);
    const auto [dw2, db2] = conv2d_backward_filter(x, dy, w.shape(), 1, 1, true);
    EXPECT_TRUE(bitwise_equal(dw1, dw2));
    EXPECT_TRUE(bitwise_equal(db1, db2));
    const auto [py, pidx] = maxpool2d(x, 3, 2, 1);
    const Tensor pdy = rand(py.shape(), dt).to(kGpu);
    EXPECT_TRUE(bitwise_equal(maxpool2d_backward(pdy, x, py, Tensor(), x.shape(), 3, 2, 1),
                              maxpool2d_backward(pdy, x, py, Tensor(), x.shape(), 3, 2, 1)));
    const Tensor gamma = rand({64}, DType::kFloat32).to(kGpu), beta = gamma.clone();
    Tensor rm, rv;  // not tracked
    const auto [by, mean, inv] = batchnorm_train(x, gamma, beta, rm, rv, 0.1, 1e-5);
    const auto [dx1, dg1, dbt1] = batchnorm_backward(x, dy, gamma, mean, inv);
    const auto [dx2, dg2, dbt2] = batchnorm_backward(x, dy, gamma, mean, inv);
    EXPECT_TRUE(bitwise_equal(dx1, dx2));
    EXPECT_TRUE(bitwise_equal(dg1, dg2));
  }
}

// --cudnn-benchmark false: cuDNN's heuristic choices (untimed, cached apart from the timed
// ones) give the CPU's results too.
TEST_F(CudnnVsCpu, HeuristicAlgorithmsMatchTheCpu) {
  struct HeuristicScope {
    HeuristicScope() { set_cudnn_benchmark(false); }
    ~HeuristicScope() { set_cudnn_benchmark(true); }
  } scope;
  for (DType dt : kDtypes)
    for (const ConvCase& g : kConvCases) {
      SCOPED_TRACE(g.str());
      SCOPED_TRACE(dtype_name(dt));
      const Tensor x = rand({g.n, g.h, g.w, g.cin}, dt), w = rand({g.cout, g.k, g.k, g.cin}, dt);
      const Tensor gx = x.to(kGpu), gw = w.to(kGpu);
      const Tensor y = conv2d(x, w, Tensor(), g.stride, g.pad);
      EXPECT_GPU_NEAR(conv2d(gx, gw, Tensor(), g.stride, g.pad), y, conv_tol(dt));
      const Tensor dy = rand(y.shape(), dt), gdy = dy.to(kGpu);
      EXPECT_GPU_NEAR(conv2d_backward_data(gdy, gw, x.shape(), g.stride, g.pad),
                      conv2d_backward_data(dy, w, x.shape(), g.stride, g.pad), conv_tol(dt));
      EXPECT_GPU_NEAR(conv2d_backward_filter(gx, gdy, w.shape(), g.stride, g.pad, false).first,
                      conv2d_backward_filter(x, dy, w.shape(), g.stride, g.pad, false).first,
                      conv_tol(dt));
    }
}

struct MatmulPrecisionScope {
  explicit MatmulPrecisionScope(kernels::MatmulPrecision p) {
    kernels::set_float32_matmul_precision(p);
  }
  ~MatmulPrecisionScope() {
    kernels::set_float32_matmul_precision(kernels::MatmulPrecision::kHighest);
  }
};

// --float32-matmul-precision: high rounds float32 convolution and GEMM inputs to TF32 (10
// mantissa bits), medium GEMM inputs to bf16 (7): results within those roundings of the CPU's
// float32 ones, and measurably further from them than the float32 (FMA) results, which shows
// the setting reaches cuDNN and cuBLAS. Sizes where tensor cores win by far (cuDNN times its
// algorithms and might otherwise pick an FMA one).
TEST_F(CudnnVsCpu, Float32MatmulPrecisionUsesTf32AndBf16WhenAllowed) {
  const Tensor x = rand({32, 32, 32, 128}, DType::kFloat32);
  const Tensor w = rand({128, 3, 3, 128}, DType::kFloat32);
  const Tensor y = conv2d(x, w, Tensor(), 1, 1);
  const Tensor a = rand({1024, 1024}, DType::kFloat32), b = rand({1024, 1024}, DType::kFloat32);
  const Tensor c = matmul(a, b);
  const Tensor gx = x.to(kGpu), gw = w.to(kGpu), ga = a.to(kGpu), gb = b.to(kGpu);
  const double conv_fma = max_rel_error(conv2d(gx, gw, Tensor(), 1, 1), y);
  const double mm_fma = max_rel_error(matmul(ga, gb), c);
  double conv_tf32 = 0, mm_tf32 = 0;
  {
    MatmulPrecisionScope high(kernels::MatmulPrecision::kHigh);
    conv_tf32 = max_rel_error(conv2d(gx, gw, Tensor(), 1, 1), y);
    mm_tf32 = max_rel_error(matmul(ga, gb), c);
    // The backward convolutions take the same math.
    const Tensor dy = rand(y.shape(), DType::kFloat32);
    EXPECT_LE(max_rel_error(conv2d_backward_data(dy.to(kGpu), gw, x.shape(), 1, 1),
                            conv2d_backward_data(dy, w, x.shape(), 1, 1)),
              5e-3);
  }
  double mm_bf16 = 0;
  {
    MatmulPrecisionScope medium(kernels::MatmulPrecision::kMedium);
    mm_bf16 = max_rel_error(matmul(ga, gb), c);
  }
  // Back to highest: float32 again (the algorithm caches key on the math).
  const double conv_again = max_rel_error(conv2d(gx, gw, Tensor(), 1, 1), y);
  char errors[160];
  std::snprintf(errors, sizeof(errors), "conv fma %.3g tf32 %.3g; matmul fma %.3g tf32 %.3g bf16 %.3g",
                conv_fma, conv_tf32, mm_fma, mm_tf32, mm_bf16);
  SCOPED_TRACE(errors);
  EXPECT_LE(conv_fma, 1e-4);
  EXPECT_LE(mm_fma, 1e-5);
  EXPECT_LE(conv_tf32, 5e-3);
  EXPECT_LE(mm_tf32, 5e-3);
  EXPECT_LE(mm_bf16, 3e-2);
  EXPECT_GT(conv_tf32, 4 * conv_fma);
  EXPECT_GT(mm_tf32, 4 * mm_fma);
  EXPECT_GT(mm_bf16, 2 * mm_tf32);
  EXPECT_LE(conv_again, 1e-4);
}

TEST_F(CudnnVsCpu, MixedDevicesAndBadParametersAreClearErrors) {
  const Tensor x = rand({2, 5, 5, 3}, DType::kFloat32);
  const Tensor w = rand({4, 3, 3, 3}, DType::kFloat32);
  EXPECT_THROW(conv2d(x.to(kGpu), w, Tensor(), 1, 1), std::invalid_argument);
  EXPECT_THROW(
      conv2d_backward_data(rand({2, 5, 5, 4}, DType::kFloat32).to(kGpu), w, x.shape(), 1, 1),
      std::invalid_argument);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0);
  const Tensor p = rand({3}, DType::kFloat32).to(kGpu);
  EXPECT_THROW(batchnorm_train(x.to(kGpu), p, p, rm, rv, 0.1, 1e-5), std::invalid_argument);
  // cuDNN's backward needs the forward's x and y, not an argmax.
  const auto [y, idx] = maxpool2d(x, 3, 2, 1);
  EXPECT_THROW(maxpool2d_backward(y.to(kGpu), Tensor(), Tensor(), idx.to(kGpu), x.shape(), 3, 2, 1),
               std::invalid_argument);
}

}  // namespace
}  // namespace mlai::tensor
