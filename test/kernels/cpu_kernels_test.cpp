// The CPU kernels (which are also the CPU backend and the reference for the CUDA kernels)
// against straightforward references on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common.h"
#include "kernels/half_convert.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

std::vector<double> ref_matmul(const std::vector<double>& a, const std::vector<double>& b,
                               int64_t m, int64_t k, int64_t n, bool ta, bool tb) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p)
        c[i * n + j] += a[ta ? p * m + i : i * k + p] * b[tb ? j * k + p : p * n + j];
  return c;
}

TEST(CpuKernels, GemmMatchesTripleLoopForEveryTransposeAndDtype) {
  Generator g(3);
  const int64_t m = 37, k = 19, n = 23;
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        Tensor a = Tensor::uniform(ta ? Shape{k, m} : Shape{m, k}, -1, 1, g, dt);
        Tensor b = Tensor::uniform(tb ? Shape{n, k} : Shape{k, n}, -1, 1, g, dt);
        const auto ref = ref_matmul(a.to_double_vector(), b.to_double_vector(), m, k, n, ta, tb);
        Tensor c = matmul(a, b, ta, tb);
        const double tol = dt == DType::kFloat64 ? 1e-13
                           : dt == DType::kFloat32 ? 1e-5
                           : dt == DType::kFloat16 ? 2e-3 : 1e-2;
        EXPECT_LT(max_rel_error(c, Tensor::from_vector(ref, {m, n})), tol)
            << dtype_name(dt) << " ta=" << ta << " tb=" << tb;
      }
    }
  }
}

TEST(CpuKernels, ElementwiseAgainstScalarReference) {
  Generator g(4);
  Tensor a = Tensor::normal({1001}, 0, 1, g, DType::kFloat64);
  Tensor b = Tensor::normal({1001}, 0, 1, g, DType::kFloat64);
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  const auto s = add(a, b).to_vector<double>(), d = sub(a, b).to_vector<double>(),
             p = mul(a, b).to_vector<double>(), q = div(a, b).to_vector<double>(),
             r = relu(a).to_vector<double>(),
             sc = scale(a, -3).to_vector<double>(),
             rb = relu_backward(b, a).to_vector<double>();
  Tensor yy = b.clone();
  axpy_(0.5, a, yy);
  const auto ax = yy.to_vector<double>();
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(s[i], x[i] + y[i]);
    ASSERT_EQ(d[i], x[i] - y[i]);
    ASSERT_EQ(p[i], x[i] * y[i]);
    ASSERT_EQ(q[i], x[i] / y[i]);
    ASSERT_EQ(r[i], x[i] > 0 ? x[i] : 0);
    ASSERT_EQ(sc[i], -3 * x[i]);
    ASSERT_EQ(rb[i], x[i] > 0 ? y[i] : 0);
    ASSERT_EQ(ax[i], y[i] + 0.5 * x[i]);
  }
  // relu6 = min(max(x, 0), 6) over [-10, 10] and its kinks; the backward passes dy where
  // 0 < x < 6 only (torch's hardtanh_backward: 0 at both kinks); nan gives 0 as relu does.
  Tensor w = scale(a, 5.0);
  std::vector<double> wv = w.to_vector<double>();
  wv[0] = 0.0, wv[1] = 6.0, wv[2] = -0.0, wv[3] = std::nan(""), wv[4] = 6.5, wv[5] = 5.999;
  w = Tensor::from_vector(wv, {1001});
  const auto r6 = relu6(w).to_vector<double>(), r6b = relu6_backward(b, w).to_vector<double>();
  for (size_t i = 0; i < wv.size(); ++i) {
    const double v = wv[i];
    ASSERT_EQ(r6[i], v > 0 ? std::min(v, 6.0) : 0.0) << v;
    ASSERT_EQ(r6b[i], v > 0 && v < 6 ? y[i] : 0.0) << v;
  }
  EXPECT_EQ(r6[3], 0.0);
  EXPECT_EQ(r6[4], 6.0);
  EXPECT_EQ(r6b[1], 0.0);
  EXPECT_EQ(r6b[5], y[5]);
  EXPECT_THROW(add(a, Tensor::zeros({1000}, DType::kFloat64)), std::invalid_argument);
  EXPECT_THROW(add(a, Tensor::zeros({1001}, DType::kFloat32)), std::invalid_argument);
}

TEST(CpuKernels, BiasActAddsPerColumn) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2, 3, -4, 5, -6}, {2, 3});
  Tensor b = Tensor::from_vector(std::vector<float>{1, 1, -10}, {3});
  EXPECT_EQ(bias_act(x, b, false).to_vector<float>(), (std::vector<float>{2, -1, -7, -3, 6, -16}));
  EXPECT_EQ(bias_act(x, b, true).to_vector<float>(), (std::vector<float>{2, 0, 0, 0, 6, 0}));
  EXPECT_THROW(bias_act(x, Tensor::zeros({2}), false), std::invalid_argument);
}

TEST(CpuKernels, ReductionsOverEveryAxis) {
  Generator g(5);
  const int64_t A = 3, B = 4, C = 5;
  Tensor x = Tensor::normal({A, B, C}, 0, 1, g, DType::kFloat64);
  const auto v = x.to_vector<double>();
  double total = 0;
  for (double e : v) total += e;
  EXPECT_NEAR(sum(x).item(), total, 1e-12);
  EXPECT_NEAR(mean(x).item(), total / 60, 1e-12);
  const auto s1 = sum_dim(x, 1).to_vector<double>();
  const auto m2 = mean_dim(x, -1, true);
  EXPECT_EQ(m2.shape(), (Shape{A, B, 1}));
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t b = 0; b < B; ++b) acc += v[(a * B + b) * C + c];
      EXPECT_NEAR(s1[a * C + c], acc, 1e-12);
    }
  const auto mv = m2.to_vector<double>();
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < B; ++b) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) acc += v[(a * B + b) * C + c];
      EXPECT_NEAR(mv[a * B + b], acc / C, 1e-12);
    }
  // float32 sums of many values stay accurate (0.1f is 0.100000001490116...).
  Tensor tenths = Tensor::full({10000000}, 0.1, DType::kFloat32);
  EXPECT_NEAR(sum(tenths).item(), 1000000.0149, 0.07);
}

TEST(CpuKernels, MaxWithArgmaxTakesTheFirstAndPropagatesNan) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 5, 5, 2, NAN, 3, -1, -1, -2}, {3, 3});
  auto [v, i] = max_dim(x, 1);
  const auto vals = v.to_vector<float>();
  EXPECT_EQ(vals[0], 5);
  EXPECT_TRUE(std::isnan(vals[1]));
  EXPECT_EQ(vals[2], -1);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0}));
  auto [v0, i0] = max_dim(x, 0);
  EXPECT_EQ(i0.to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 0}));
}

// Top-k hits against sorting each row (argmax's order: value descending, then index), with
// ties (values on a coarse grid), a nan, and labels out of range; k = 1 is the argmax.
TEST(CpuKernels, TopkHitsMatchSortedRanksAndTheArgmax) {
  std::mt19937 rng(8);
  const int64_t n = 300, classes = 17;
  std::vector<float> logits(static_cast<size_t>(n * classes));
  for (auto& v : logits) v = static_cast<float>(static_cast<int>(rng() % 9)) * 0.5f;  // ties
  logits[5 * classes + 3] = NAN;
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (auto& l : labels) l = static_cast<int64_t>(rng() % classes);
  labels[7] = -1;       // ignored, as the confusion matrix ignores it
  labels[8] = classes;  // likewise
  const Tensor x = Tensor::from_vector(logits, {n, classes});
  const Tensor y = Tensor::from_vector(labels, {n});
  for (int64_t k : {1, 2, 5, 16, 17}) {
    int64_t want = 0;
    for (int64_t r = 0; r < n; ++r) {
      if (labels[r] < 0 || labels[r] >= classes) continue;
      std::vector<int64_t> order(static_cast<size_t>(classes));
      for (int64_t c = 0; c < classes; ++c) order[c] = c;
      const float* row = &logits[static_cast<size_t>(r * classes)];
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        if (std::isnan(row[a]) || std::isnan(row[b])) return std::isnan(row[a]) && !std::isnan(row[b]);
        return row[a] > row[b];
      });
      want += std::find(order.begin(), order.begin() + k, labels[r]) != order.begin() + k;
    }
    Tensor hits = Tensor::zeros({}, DType::kInt64);
    topk_hits_(x, y, k, hits);
    EXPECT_EQ(hits.to_vector<int64_t>()[0], want) << "k " << k;
    if (k == 1) {
      const auto argmax = max_dim(x, 1).second.to_vector<int64_t>();
      int64_t same = 0;
      for (int64_t r = 0; r < n; ++r) same += argmax[r] == labels[r];
      EXPECT_EQ(want, same);
    }
  }
  // Half and bfloat16 logits rank as their float values do.
  Tensor hits = Tensor::zeros({}, DType::kInt64), half_hits = Tensor::zeros({}, DType::kInt64);
  topk_hits_(x, y, 5, hits);
  topk_hits_(x.to(DType::kFloat16), y, 5, half_hits);
  EXPECT_EQ(half_hits.to_vector<int64_t>(), hits.to_vector<int64_t>());
  EXPECT_THROW(topk_hits_(x, y, 0, hits), std::invalid_argument);
}

TEST(CpuKernels, SoftmaxCrossEntropyMatchesTheDefinition) {
  Generator g(6);
  const int64_t rows = 7, classes = 5;
  Tensor logits = Tensor::normal({rows, classes}, 0, 3, g, DType::kFloat64);
  std::vector<int64_t> lab{0, 4, 2, 2, 1, 3, 0};
  Tensor labels = Tensor::from_vector(lab, {rows});
  const auto z = logits.to_vector<double>();
  for (double eps : {0.0, 0.2}) {
    auto [loss, lse] = softmax_xent_forward(logits, labels, eps);
    Tensor dloss = Tensor::full({}, 2.0, DType::kFloat64);
    const auto dz = softmax_xent_backward(logits, labels, lse, dloss, 0.5, eps).to_vector<double>();
    const auto l = loss.to_vector<double>();
    for (int64_t r = 0; r < rows; ++r) {
      double se = 0;
      for (int64_t c = 0; c < classes; ++c) se += std::exp(z[r * classes + c]);
      double expect = 0;
      for (int64_t c = 0; c < classes; ++c) {
        const double logp = z[r * classes + c] - std::log(se);
        const double target = eps / classes + (c == lab[r] ? 1 - eps : 0);
        expect -= target * logp;
        EXPECT_NEAR(dz[r * classes + c], 2.0 * 0.5 * (std::exp(logp) - target), 1e-12);
      }
      EXPECT_NEAR(l[r], expect, 1e-12);
    }
  }
  // fp16 logits give an fp32 loss; huge logits do not overflow.
  Tensor big = Tensor::from_vector(std::vector<float>{60000, 0, -60000, 60000}, {2, 2});
  auto [l16, lse16] = softmax_xent_forward(cast(big, DType::kFloat16),
                                           Tensor::from_vector(std::vector<int64_t>{0, 1}, {2}), 0);
  EXPECT_EQ(l16.dtype(), DType::kFloat32);
  EXPECT_NEAR(l16.to_vector<float>()[0], 0.0, 1e-3);
  EXPECT_NEAR(l16.to_vector<float>()[1], 0.0, 1e-3);
}

TEST(CpuKernels, UnscaleCheckFiniteFlagsInfAndNan) {
  Generator g(8);
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    std::vector<Tensor> grads;
    for (int i = 0; i < 60; ++i) grads.push_back(Tensor::uniform({17 + i}, -4, 4, g, dt));  // 2 groups
    std::vector<std::vector<double>> before;
    for (auto& t : grads) before.push_back(t.to_double_vector());
    Tensor inv = Tensor::full({}, 0.25, DType::kFloat32);
    Tensor found = Tensor::zeros({}, DType::kFloat32);
    unscale_check_finite_(grads, inv, found);
    EXPECT_EQ(found.item(), 0.0) << dtype_name(dt);
    for (size_t t = 0; t < grads.size(); ++t) {
      const auto after = grads[t].to_double_vector();
      for (size_t i = 0; i < after.size(); ++i) ASSERT_EQ(after[i], before[t][i] * 0.25);
    }
    fill_(grads[55], INFINITY);  // in the second launch group
    unscale_check_finite_(grads, inv, found);
    EXPECT_EQ(found.item(), 1.0);
  }
}

// The F16C path of kernels/half_convert.h gives the portable conversions' bits: every half,
// every rounding tie between halves and its float neighbours, a sweep over all floats, scaled
// conversions and sums; NaN stays NaN. Lengths that are not multiples of 8 test the tails.
TEST(HalfConvert, F16cGivesThePortableBits) {
  namespace k = mlai::kernels;
  if (std::string(k::cpu::half_conversion_isa()) != "f16c")
    GTEST_SKIP() << "this CPU has no F16C: the portable conversions are the only path";
  auto same = [](uint32_t a, uint32_t b, bool half) {
    const uint32_t exp = half ? 0x7c00u : 0x7f800000u, man = half ? 0x3ffu : 0x7fffffu;
    const bool nan_a = (a & exp) == exp && (a & man), nan_b = (b & exp) == exp && (b & man);
    return nan_a || nan_b ? nan_a == nan_b : a == b;
  };
  struct Run {  // one conversion by both paths
    std::vector<uint32_t> f16c, portable;
  };
  auto both = [](auto convert) {
    Run r;
    k::cpu::use_f16c(true);
    r.f16c = convert();
    k::cpu::use_f16c(false);
    r.portable = convert();
    k::cpu::use_f16c(true);
    return r;
  };
  // Every half to float, plain and times 3.
  std::vector<uint16_t> halves(65536 + 5);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(i * 40503u);
  for (float alpha : {1.0f, 3.0f}) {
    const Run r = both([&] {
      std::vector<float> f(halves.size());
      k::cpu::halves_to_floats(halves.data(), f.data(), static_cast<int64_t>(f.size()), alpha);
      std::vector<uint32_t> bits(f.size());
      std::memcpy(bits.data(), f.data(), f.size() * 4);
      return bits;
    });
    for (size_t i = 0; i < halves.size(); ++i)
      ASSERT_TRUE(same(r.f16c[i], r.portable[i], false)) << "half " << halves[i] << " x" << alpha;
  }
  // Floats to half: the ties between neighbouring halves and the floats next to them, then a
  // sweep over every 4099th bit pattern (NaNs, infinities and subnormals included).
  std::vector<float> floats;
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const float mid = (k::half_to_float(static_cast<uint16_t>(h)) +
                       k::half_to_float(static_cast<uint16_t>(h + 1))) /
                      2;
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      floats.push_back(v);
      floats.push_back(-v);
    }
  }
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 4099) {
    float v;
    const auto bits = static_cast<uint32_t>(b);
    std::memcpy(&v, &bits, 4);
    floats.push_back(v);
  }
  floats.resize(floats.size() - floats.size() % 8 + 3);  // a tail
  for (float alpha : {1.0f, 1.0f / 3}) {
    const Run r = both([&] {
      std::vector<uint16_t> h(floats.size());
      k::cpu::floats_to_halves(floats.data(), h.data(), static_cast<int64_t>(h.size()), alpha);
      return std::vector<uint32_t>(h.begin(), h.end());
    });
    size_t differ_from_cast = 0;
    for (size_t i = 0; i < floats.size(); ++i) {
      ASSERT_TRUE(same(r.f16c[i], r.portable[i], true)) << "float " << floats[i] << " x" << alpha;
      differ_from_cast += r.portable[i] != k::float_to_half(floats[i]);
    }
    EXPECT_EQ(differ_from_cast > 0, alpha != 1.0f);  // alpha was applied, and only then
  }
  // Sums of random half pairs.
  std::mt19937 rng(7);
  std::vector<uint16_t> a(100003), b0(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint16_t>(rng());
    b0[i] = static_cast<uint16_t>(rng());
  }
  const Run r = both([&] {
    std::vector<uint16_t> b = b0;
    k::cpu::add_halves(a.data(), b.data(), static_cast<int64_t>(b.size()));
    return std::vector<uint32_t>(b.begin(), b.end());
  });
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(same(r.f16c[i], r.portable[i], true)) << a[i] << " + " << b0[i];
    const float expect = k::half_to_float(a[i]) + k::half_to_float(b0[i]);
    ASSERT_TRUE(same(r.portable[i], k::float_to_half(expect), true));
  }
}

}  // namespace
}  // namespace mlai::tensor
