// Every CUDA op of tensor/ops.h against its CPU twin on the same random inputs, over sizes that
// are not multiples of the block size and every float dtype, with per-dtype error bounds.
// Skips (never falls back to the CPU) where there is no GPU or the build has no CUDA.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

const Device kGpu = Device::cuda(0);
const std::vector<int64_t> kSizes = {1, 257, 1000003};
const std::vector<DType> kFloats = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                    DType::kBFloat16};

enum class Kind { kElementwise, kReduction };
double tol(DType dt, Kind kind) {
  const bool ew = kind == Kind::kElementwise;
  switch (dt) {
    case DType::kFloat64:
      return 1e-12;
    case DType::kFloat32:
      return ew ? 1e-6 : 2e-5;
    case DType::kFloat16:
      return ew ? 2e-3 : 1e-2;
    default:
      return ew ? 1e-2 : 3e-2;  // bfloat16
  }
}

class CudaVsCpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
  Generator gen_{1234};
  Tensor rand(const Shape& s, DType dt, double lo = -2, double hi = 2) {
    return Tensor::uniform(s, lo, hi, gen_, dt);
  }
};

// Runs op on the CPU tensors and on their GPU copies; checks the GPU result stayed on the GPU.
#define EXPECT_GPU_MATCHES(DT, KIND, OP_CPU, OP_GPU)                                         \
  do {                                                                                       \
    const Tensor cpu_ = (OP_CPU), gpu_ = (OP_GPU);                                           \
    EXPECT_TRUE(gpu_.device().is_cuda());                                                    \
    EXPECT_LE(max_rel_error(gpu_, cpu_), tol(DT, KIND)) << dtype_name(DT) << " " << #OP_CPU; \
  } while (0)

TEST_F(CudaVsCpu, ElementwiseOps) {
  for (DType dt : kFloats) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      const Tensor a = rand({n}, dt), b = rand({n}, dt);
      const Tensor ga = a.to(kGpu), gb = b.to(kGpu);
      const auto E = Kind::kElementwise;
      EXPECT_GPU_MATCHES(dt, E, add(a, b), add(ga, gb));
      EXPECT_GPU_MATCHES(dt, E, sub(a, b), sub(ga, gb));
      EXPECT_GPU_MATCHES(dt, E, mul(a, b), mul(ga, gb));
      const Tensor pos = add(mul(b, b), Tensor::full({n}, 0.5, dt));  // a divisor >= 0.5
      EXPECT_GPU_MATCHES(dt, E, div(a, pos), div(ga, pos.to(kGpu)));
      EXPECT_GPU_MATCHES(dt, E, scale(a, -0.37), scale(ga, -0.37));
      EXPECT_GPU_MATCHES(dt, E, relu(a), relu(ga));
      EXPECT_GPU_MATCHES(dt, E, relu_backward(b, a), relu_backward(gb, ga));
      const Tensor wide = scale(a, 8.0), gwide = wide.to(kGpu);  // [-8, 8]: both of relu6's clamps
      EXPECT_GPU_MATCHES(dt, E, relu6(wide), relu6(gwide));
      EXPECT_GPU_MATCHES(dt, E, relu6_backward(b, wide), relu6_backward(gb, gwide));
      Tensor y = b.clone(), gy = b.to(kGpu);
      axpy_(0.61, a, y);
      axpy_(0.61, ga, gy);
      EXPECT_LE(max_rel_error(gy, y), tol(dt, E));
      if (n > 1) {  // views one element in: misaligned pointers take the scalar path
        const Tensor va = a.slice(1, n), vb = b.slice(1, n);
        EXPECT_GPU_MATCHES(dt, E, add(va, vb), add(ga.slice(1, n), gb.slice(1, n)));
      }
    }
  }
}

TEST_F(CudaVsCpu, BiasActWithAndWithoutRelu) {
  for (DType dt : kFloats) {
    for (const Shape& s : {Shape{1, 1}, Shape{257, 33}, Shape{129, 64}, Shape{997, 1003}}) {
      const Tensor x = rand(s, dt), bias = rand({s[1]}, dt);
      for (bool r : {false, true})
        EXPECT_GPU_MATCHES(dt, Kind::kElementwise, bias_act(x, bias, r),
                           bias_act(x.to(kGpu), bias.to(kGpu), r));
    }
  }
}

TEST_F(CudaVsCpu, SumAndMean) {
  for (DType dt : kFloats) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      const Tensor x = rand({n}, dt, 0.5, 1.5), gx = x.to(kGpu);  // positive: no cancellation
      const auto R = Kind::kReduction;
      EXPECT_GPU_MATCHES(dt, R, mean(x), mean(gx));
      EXPECT_GPU_MATCHES(dt, R, sum(x, 1.0 / static_cast<double>(n)),
                         sum(gx, 1.0 / static_cast<double>(n)));
      if (dt != DType::kFloat16 || n < 40000)  // a larger fp16 sum overflows to inf
        EXPECT_GPU_MATCHES(dt, R, sum(x), sum(gx));
      if (n > 1) EXPECT_GPU_MATCHES(dt, R, mean(x.slice(1, n)), mean(gx.slice(1, n)));
    }
  }
}

// Shapes that reach every kernel variant: a thread per output, tiles over a long axis, the
// coalesced thread-per-output case (inner >= 32, many outputs), and the whole-tensor path.
const std::vector<Shape> kReduceShapes = {Shape{5, 37, 3}, Shape{2, 300, 700}, Shape{64, 40, 1030},
                                          Shape{1, 100003, 1}, Shape{1, 1, 1}};

TEST_F(CudaVsCpu, SumDimOnEveryAxis) {
  for (DType dt : kFloats) {
    for (const Shape& s : kReduceShapes) {
      const Tensor x = rand(s, dt, 0.5, 1.5), gx = x.to(kGpu);
      for (int d = 0; d < 3; ++d) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(s) + " dim " +
                     std::to_string(d));
        const double sc = 1.0 / static_cast<double>(s[static_cast<size_t>(d)]);
        EXPECT_GPU_MATCHES(dt, Kind::kReduction, sum_dim(x, d, false, sc),
                           sum_dim(gx, d, false, sc));
        EXPECT_GPU_MATCHES(dt, Kind::kReduction, mean_dim(x, d, true), mean_dim(gx, d, true));
        if (s[static_cast<size_t>(d)] < 100)
          EXPECT_GPU_MATCHES(dt, Kind::kReduction, sum_dim(x, d), sum_dim(gx, d));
      }
    }
  }
}

TEST_F(CudaVsCpu, MaxDimValuesAndIndices) {
  for (DType dt : kFloats) {
    for (const Shape& s : kReduceShapes) {
      const Tensor x = rand(s, dt), gx = x.to(kGpu);
      for (int d = 0; d < 3; ++d) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(s) + " dim " +
                     std::to_string(d));
        const auto [v, i] = max_dim(x, d);
        const auto [gv, gi] = max_dim(gx, d);
        EXPECT_EQ(max_rel_error(gv, v), 0.0);  // a copy of an input element: exact
        EXPECT_EQ(gi.to_vector<int64_t>(), i.to_vector<int64_t>());  // ties: the first index
      }
    }
  }
  // nan wins, and the first nan is the one reported.
  const Tensor x = Tensor::from_vector<float>({1, NAN, 3, NAN, 2, 5, 4, 4, 1}, {3, 3});
  const auto [v, i] = max_dim(x.to(kGpu), 1);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_TRUE(std::isnan(v.to_vector<float>()[0]));
  EXPECT_EQ(v.to_vector<float>()[2], 4.0f);
}

// Top-k hits (a warp per row on the GPU) count exactly what the CPU counts, for every float
// dtype, with ties on a coarse grid and rows longer than a warp.
TEST_F(CudaVsCpu, TopkHitsCountExactly) {
  for (DType dt : kFloats) {
    for (int64_t classes : {3, 10, 100, 1000}) {
      const int64_t n = 517;
      Tensor x = Tensor::uniform({n, classes}, 0, 8, gen_, DType::kFloat32);
      std::vector<float> v = x.to_vector<float>();
      for (auto& e : v) e = std::floor(e);  // ties
      x = Tensor::from_vector(v, {n, classes}).to(dt);
      // Labels spread over the classes, and every fourth row's the row's first maximum (a
      // top-1 hit by construction: with 8 levels over 1000 classes the spread labels alone
      // almost never are, and a count of 0 would check little).
      const std::vector<int64_t> first_max = max_dim(x, 1).second.to_vector<int64_t>();
      std::vector<int64_t> labels(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r)
        labels[r] = r % 4 == 0 ? first_max[static_cast<size_t>(r)] : (r * 7919) % classes;
      const Tensor y = Tensor::from_vector(labels, {n});
      for (int64_t k : {1, 5}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " classes " + std::to_string(classes) +
                     " k " + std::to_string(k));
        Tensor hits = Tensor::zeros({}, DType::kInt64);
        Tensor ghits = Tensor::zeros({}, DType::kInt64, kGpu);
        topk_hits_(x, y, k, hits);
        topk_hits_(x.to(kGpu), y.to(kGpu), k, ghits);
        EXPECT_EQ(ghits.to_vector<int64_t>(), hits.to_vector<int64_t>());
        EXPECT_GE(hits.to_vector<int64_t>()[0], (n + 3) / 4);
      }
    }
  }
}

TEST_F(CudaVsCpu, BroadcastDimOnEveryAxisAndFromAScalar) {
  for (DType dt : kFloats) {
    for (const Shape& s : kReduceShapes) {
      for (int d = 0; d < 3; ++d) {
        Shape reduced = s;
        reduced.erase(reduced.begin() + d);
        const Tensor g = rand(reduced, dt);
        EXPECT_GPU_MATCHES(dt, Kind::kElementwise, broadcast_dim(g, s, d, 0.5),
                           broadcast_dim(g.to(kGpu), s, d, 0.5));
      }
      const Tensor g = rand({}, dt);
      EXPECT_GPU_MATCHES(dt, Kind::kElementwise, broadcast_dim(g, s, -1, 2.0),
                         broadcast_dim(g.to(kGpu), s, -1, 2.0));
    }
  }
}

TEST_F(CudaVsCpu, SoftmaxCrossEntropyForwardBackward) {
  for (DType dt : kFloats) {
    const DType loss_dt = dt == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
    for (const Shape& s : {Shape{1, 10}, Shape{257, 37}, Shape{1000, 1000}}) {
      std::vector<int64_t> y(static_cast<size_t>(s[0]));
      for (size_t r = 0; r < y.size(); ++r) y[r] = static_cast<int64_t>((r * 7919) % s[1]);
      const Tensor logits = rand(s, dt, -4, 4), labels = Tensor::from_vector(y, {s[0]});
      const Tensor glogits = logits.to(kGpu), glabels = labels.to(kGpu);
      for (double eps : {0.0, 0.1}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(s) + " eps " +
                     std::to_string(eps));
        const auto [loss, lse] = softmax_xent_forward(logits, labels, eps);
        const auto [gloss, glse] = softmax_xent_forward(glogits, glabels, eps);
        EXPECT_EQ(gloss.dtype(), loss_dt);
        const double ftol = loss_dt == DType::kFloat64 ? 1e-12 : 1e-5;  // same inputs, fp32 maths
        EXPECT_LE(max_rel_error(gloss, loss), ftol);
        EXPECT_LE(max_rel_error(glse, lse), ftol);
        const Tensor dloss = Tensor::full({}, 0.75, loss_dt);
        const double sc = 1.0 / static_cast<double>(s[0]);
        EXPECT_GPU_MATCHES(dt, Kind::kReduction,
                           softmax_xent_backward(logits, labels, lse, dloss, sc, eps),
                           softmax_xent_backward(glogits, glabels, glse, dloss.to(kGpu), sc, eps));
        // Class weights: the weighted numerators, each row's w[y], and the weighted backward.
        const Tensor w = rand({s[1]}, loss_dt, 0.2, 3.0);
        const double wsum = sum(w).item();
        Tensor wrows, gwrows;
        const auto [wl, wlse] = softmax_xent_forward(logits, labels, eps, w, &wrows);
        const auto [gwl, gwlse] = softmax_xent_forward(glogits, glabels, eps, w.to(kGpu), &gwrows);
        EXPECT_LE(max_rel_error(gwl, wl), ftol);
        EXPECT_LE(max_rel_error(gwrows, wrows), 0.0);
        EXPECT_GPU_MATCHES(
            dt, Kind::kReduction, softmax_xent_backward(logits, labels, wlse, dloss, sc, eps, w, wsum),
            softmax_xent_backward(glogits, glabels, gwlse, dloss.to(kGpu), sc, eps, w.to(kGpu), wsum));
      }
    }
  }
}

TEST_F(CudaVsCpu, MatmulEveryTransposeOddSizes) {
  for (DType dt : kFloats) {
    for (const auto& [m, k, n] :
         std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {37, 129, 65}, {257, 301, 99}}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " m,k,n=" + std::to_string(m) + "," +
                       std::to_string(k) + "," + std::to_string(n) + " ta=" + std::to_string(ta) +
                       " tb=" + std::to_string(tb));
          const Tensor a = rand(ta ? Shape{k, m} : Shape{m, k}, dt, -1, 1);
          const Tensor b = rand(tb ? Shape{n, k} : Shape{k, n}, dt, -1, 1);
          EXPECT_GPU_MATCHES(dt, Kind::kReduction, matmul(a, b, ta, tb),
                             matmul(a.to(kGpu), b.to(kGpu), ta, tb));
          Tensor c = rand({m, n}, dt, -1, 1), gc = c.to(kGpu);  // alpha, beta and accumulation
          gemm_(a, b, c, ta, tb, 0.5, -1.25);
          gemm_(a.to(kGpu), b.to(kGpu), gc, ta, tb, 0.5, -1.25);
          EXPECT_LE(max_rel_error(gc, c), tol(dt, Kind::kReduction));
        }
      }
    }
  }
}

TEST_F(CudaVsCpu, CastEveryPairIsExact) {
  const std::vector<DType> all = {DType::kFloat32,  DType::kFloat64, DType::kFloat16,
                                  DType::kBFloat16, DType::kInt32,   DType::kInt64,
                                  DType::kUInt8};
  for (int64_t n : kSizes) {
    // In [0, 250): every dtype holds it, so no cast leaves its defined range.
    const Tensor base = rand({n}, DType::kFloat64, 0.0, 250.0);
    for (DType from : all) {
      const Tensor x = cast(base, from), gx = x.to(kGpu);
      for (DType to : all) {
        const Tensor y = cast(x, to), gy = cast(gx, to);
        EXPECT_EQ(gy.dtype(), to);
        EXPECT_EQ(max_rel_error(gy, y), 0.0)
            << dtype_name(from) << " -> " << dtype_name(to) << " n=" << n;
      }
    }
  }
}

// --ddp-comm-hook's packing and unpacking: the same bits as the CPU, for a world size that is
// not a power of two (so the float product rounds) and values beyond half's range (inf).
TEST_F(CudaVsCpu, ScaleCastPacksAndUnpacksExactly) {
  for (int64_t n : kSizes) {
    const Tensor x = rand({n}, DType::kFloat32, -2e5, 2e5), gx = x.to(kGpu);
    for (DType wire : {DType::kFloat16, DType::kBFloat16}) {
      SCOPED_TRACE(std::string(dtype_name(wire)) + " n=" + std::to_string(n));
      Tensor w = Tensor::empty({n}, wire), gw = Tensor::empty({n}, wire, kGpu);
      scale_cast_(x, w, 1.0 / 3);
      scale_cast_(gx, gw, 1.0 / 3);
      EXPECT_EQ(gw.to(Device::cpu()).to_double_vector(), w.to_double_vector());
      Tensor back = Tensor::empty({n}, DType::kFloat32),
             gback = Tensor::empty({n}, DType::kFloat32, kGpu);
      scale_cast_(w, back, 3.0);
      scale_cast_(gw, gback, 3.0);
      EXPECT_EQ(gback.to(Device::cpu()).to_vector<float>(), back.to_vector<float>());
    }
  }
}

TEST_F(CudaVsCpu, FillEveryDtype) {
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16,
                   DType::kInt32, DType::kInt64, DType::kUInt8}) {
    for (int64_t n : kSizes) {
      Tensor t = Tensor::empty({n}, dt), gt = Tensor::empty({n}, dt, kGpu);
      fill_(t, 3.3);
      fill_(gt, 3.3);
      EXPECT_EQ(max_rel_error(gt, t), 0.0) << dtype_name(dt) << " n=" << n;
    }
  }
}

TEST_F(CudaVsCpu, RandomFillsDrawTheSameNumbers) {
  for (DType dt : kFloats) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
      Generator g1(77), g2(77);
      g1.advance(5);  // a non-zero offset
      g2.advance(5);
      Tensor u = Tensor::empty({n}, dt), gu = Tensor::empty({n}, dt, kGpu);
      uniform_(u, -1.5, 3.0, g1);
      uniform_(gu, -1.5, 3.0, g2);
      EXPECT_EQ(max_rel_error(gu, u), 0.0);  // IEEE double maths on both sides
      Tensor z = Tensor::empty({n}, dt), gz = Tensor::empty({n}, dt, kGpu);
      normal_(z, 0.5, 2.0, g1);
      normal_(gz, 0.5, 2.0, g2);
      // log/cos may differ by an ulp in double, which very rarely moves a rounded value.
      const double bound = dt == DType::kFloat64 ? 1e-13 : dt == DType::kFloat32 ? 1e-6 : 1e-2;
      EXPECT_LE(max_rel_error(gz, z), bound);
      EXPECT_EQ(g1.offset(), g2.offset());
    }
  }
}

TEST_F(CudaVsCpu, UnscaleCheckFinite) {
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int planted : {-1, 0, 1}) {  // none, an inf, a nan
      for (int count : {4, 50}) {     // 50: more than one launch's worth of tensors
        SCOPED_TRACE(std::string(dtype_name(dt)) + " planted=" + std::to_string(planted) +
                     " count=" + std::to_string(count));
        std::vector<Tensor> cpu, gpu;
        for (int t = 0; t < count; ++t) {
          const int64_t n = t == 2 ? 1000003 : kSizes[static_cast<size_t>(t % 2)] + t;
          Tensor x = rand({n}, dt, -1000, 1000);
          if (planted >= 0 && t == count - 1) {
            Tensor bad = Tensor::full({1}, planted == 0 ? INFINITY : NAN, dt);
            x.slice(n / 2, n / 2 + 1).copy_from(bad);
          }
          cpu.push_back(x);
          gpu.push_back(x.to(kGpu));
        }
        const Tensor inv = Tensor::full({1}, 0.3);
        Tensor found = Tensor::zeros({1}), gfound = Tensor::zeros({1}, DType::kFloat32, kGpu);
        unscale_check_finite_(cpu, inv, found);
        unscale_check_finite_(gpu, inv.to(kGpu), gfound);
        EXPECT_EQ(found.item(), planted >= 0 ? 1.0 : 0.0);
        EXPECT_EQ(gfound.item(), found.item());
        for (int t = 0; t < count; ++t)
          EXPECT_EQ(max_rel_error(gpu[t], cpu[t]), 0.0) << "tensor " << t;
      }
    }
  }
}

}  // namespace
}  // namespace mlai::tensor
