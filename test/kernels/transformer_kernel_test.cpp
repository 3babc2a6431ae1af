// The Vision Transformer's CPU kernels (kernels/transformer.h, gemm_batched) against plain loops
// in double: layer norm and its backward, GELU at known values, the row softmax, multi-head
// self-attention from packed q, k, v (the strided products' layout), the token embedding and
// token picking; fp16 and bf16 storage within their rounding; layer norm's backward with the
// same bits on one thread and on the pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/parallel.h"
#include "tensor/ops.h"
#include "tensor/transformer_ops.h"

namespace mlai::tensor {
namespace {

std::vector<double> as_double(const Tensor& t) { return t.to(DType::kFloat64).to_vector<double>(); }

// max |a - b| / max(max |b|, 1e-3)
double rel_err(const Tensor& a, const std::vector<double>& ref) {
  const std::vector<double> v = as_double(a);
  EXPECT_EQ(v.size(), ref.size());
  double err = 0, scale = 1e-3;
  for (size_t i = 0; i < ref.size() && i < v.size(); ++i) {
    err = std::max(err, std::abs(v[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

class TransformerKernels : public ::testing::Test {
 protected:
  Generator gen{23};
  Tensor rand(const Shape& s, double lo = -1, double hi = 1) {
    return Tensor::uniform(s, lo, hi, gen, DType::kFloat64);
  }
};

struct LnRef {
  std::vector<double> y, dx, dgamma, dbeta;
};
LnRef layer_norm_ref(const std::vector<double>& x, const std::vector<double>& g,
                     const std::vector<double>& b, const std::vector<double>& dy, int64_t rows,
                     int64_t c, double eps) {
  LnRef r{std::vector<double>(x.size()), std::vector<double>(x.size()),
          std::vector<double>(c, 0.0), std::vector<double>(c, 0.0)};
  for (int64_t i = 0; i < rows; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < c; ++j) m += x[i * c + j] / c;
    for (int64_t j = 0; j < c; ++j) v += (x[i * c + j] - m) * (x[i * c + j] - m) / c;
    const double rs = 1 / std::sqrt(v + eps);
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < c; ++j) {
      const double xh = (x[i * c + j] - m) * rs;
      r.y[i * c + j] = xh * g[j] + b[j];
      r.dgamma[j] += dy[i * c + j] * xh;
      r.dbeta[j] += dy[i * c + j];
      sg += dy[i * c + j] * g[j];
      sgx += dy[i * c + j] * g[j] * xh;
    }
    for (int64_t j = 0; j < c; ++j) {
      const double xh = (x[i * c + j] - m) * rs;
      r.dx[i * c + j] = rs * (dy[i * c + j] * g[j] - sg / c - xh * sgx / c);
    }
  }
  return r;
}

TEST_F(TransformerKernels, LayerNormMatchesLoopsInEveryDtype) {
  for (int64_t c : {100, 256, 7}) {
    const int64_t rows = 37;
    // An offset mean, as activations have, so the two-pass variance matters.
    const Tensor x = rand({rows, c}, 2.0, 5.0), g = rand({c}), b = rand({c}), dy = rand({rows, c});
    const LnRef ref = layer_norm_ref(as_double(x), as_double(g), as_double(b), as_double(dy),
                                     rows, c, 1e-6);
    for (auto [dt, tol] : {std::pair{DType::kFloat64, 1e-12}, {DType::kFloat32, 2e-5},
                           {DType::kFloat16, 4e-3}, {DType::kBFloat16, 3e-2}}) {
      const DType pdt = dt == DType::kFloat64 ? dt : DType::kFloat32;
      const Tensor xd = x.to(dt), dyd = dy.to(dt), gd = g.to(pdt);
      const LayerNormOut o = layer_norm(xd, gd, b.to(pdt), 1e-6);
      EXPECT_LT(rel_err(o.y, ref.y), tol) << dtype_name(dt) << " y, c " << c;
      const LayerNormGrads d = layer_norm_backward(xd, dyd, gd, o.mean, o.rstd, true);
      // dx cancels (sums of terms of both signs): the half types get a looser bound.
      const double dx_tol = dt == DType::kFloat16 ? 2e-2 : dt == DType::kBFloat16 ? 1e-1 : tol;
      EXPECT_LT(rel_err(d.dx, ref.dx), dx_tol) << dtype_name(dt) << " dx, c " << c;
      EXPECT_LT(rel_err(d.dgamma, ref.dgamma), dx_tol) << dtype_name(dt) << " dgamma, c " << c;
      EXPECT_LT(rel_err(d.dbeta, ref.dbeta), dx_tol) << dtype_name(dt) << " dbeta, c " << c;
    }
  }
}

TEST_F(TransformerKernels, LayerNormWithoutAffineIsTheNormalisedRow) {
  const Tensor x = rand({5, 12}, -3, 3);
  const LayerNormOut o = layer_norm(x, Tensor(), Tensor(), 1e-5);
  const std::vector<double> ones(12, 1.0), zeros(12, 0.0), dy(60, 0.0);
  const LnRef ref = layer_norm_ref(as_double(x), ones, zeros, dy, 5, 12, 1e-5);
  EXPECT_LT(rel_err(o.y, ref.y), 1e-13);
}

TEST_F(TransformerKernels, LayerNormBackwardBitsDoNotDependOnThreads) {
  const Tensor x = rand({3000, 48}).to(DType::kFloat32), dy = rand({3000, 48}).to(DType::kFloat32);
  const Tensor g = rand({48}).to(DType::kFloat32);
  const LayerNormOut o = layer_norm(x, g, rand({48}).to(DType::kFloat32), 1e-6);
  kernels::cpu::set_max_threads(1);
  const LayerNormGrads one = layer_norm_backward(x, dy, g, o.mean, o.rstd, true);
  kernels::cpu::set_max_threads(kernels::cpu::pool_threads());
  const LayerNormGrads pool = layer_norm_backward(x, dy, g, o.mean, o.rstd, true);
  EXPECT_EQ(one.dx.to_vector<float>(), pool.dx.to_vector<float>());
  EXPECT_EQ(one.dgamma.to_vector<float>(), pool.dgamma.to_vector<float>());
  EXPECT_EQ(one.dbeta.to_vector<float>(), pool.dbeta.to_vector<float>());
}

TEST_F(TransformerKernels, GeluAtKnownValues) {
  // x Phi(x) and Phi(x) + x phi(x) from the closed forms (erf and exp in long double).
  const std::vector<double> xs = {-4.0, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0};
  const Tensor x = Tensor::from_vector(xs, {7});
  const std::vector<double> y = gelu(x).to_vector<double>();
  const std::vector<double> d = gelu_backward(Tensor::full({7}, 1.0, DType::kFloat64), x)
                                    .to_vector<double>();
  for (size_t i = 0; i < xs.size(); ++i) {
    const long double v = xs[i];
    const long double cdf = 0.5L * (1 + std::erf(v / std::sqrt(2.0L)));
    const long double pdf = std::exp(-v * v / 2) / std::sqrt(2 * 3.14159265358979323846L);
    EXPECT_NEAR(y[i], static_cast<double>(v * cdf), 1e-15) << xs[i];
    EXPECT_NEAR(d[i], static_cast<double>(cdf + v * pdf), 1e-15) << xs[i];
  }
  EXPECT_NEAR(y[5], 0.8413447460685429, 1e-15);  // gelu(1) = Phi(1)
}

// The float lanes' GELU (a polynomial exp and Numerical Recipes' erfc, vectorized) against
// std::erf in double from -30 to 30, the far tails included (where GELU(x) is a tiny negative
// number, so its relative error there is erfc's), and in fp16 storage.
TEST_F(TransformerKernels, GeluInFloatLanesMatchesDouble) {
  std::vector<double> xs;
  for (double v = -30; v <= 30; v += 0.01) xs.push_back(v);
  for (double v : {-1e-30, 1e-30, -87.0, 88.0, -200.0, 200.0}) xs.push_back(v);
  const int64_t n = static_cast<int64_t>(xs.size());
  const Tensor x = Tensor::from_vector(xs, {n}), ones = Tensor::full({n}, 1.0, DType::kFloat64);
  const std::vector<double> y = gelu(x).to_vector<double>();
  const Tensor xf = x.to(DType::kFloat32);
  const std::vector<double> yf = as_double(gelu(xf));
  const std::vector<double> df = as_double(gelu_backward(ones.to(DType::kFloat32), xf));
  const std::vector<double> xr = as_double(xf);  // the float inputs, exactly
  double worst_y = 0, worst_d = 0;
  for (int64_t i = 0; i < n; ++i) {
    // References at the rounded input: GELU(x) and GELU'(x) in double.
    const double v = xr[i];
    const double cdf = 0.5 * std::erfc(-v / std::sqrt(2.0));
    const double ry = v * cdf, rd = cdf + v * std::exp(-v * v / 2) / std::sqrt(2 * M_PI);
    // Relative, except below float's normal range, where flushing to (near) zero is right.
    // In the tails the bound grows as x^2: exp(-x^2 / 2) carries the float rounding of its
    // argument (6e-8 of x^2 / 2, absolute), as any float erf does.
    const double bound = 1e-6 + 1e-7 * v * v;
    if (std::abs(ry) > 1e-36)
      worst_y = std::max(worst_y, std::abs(yf[i] - ry) / std::abs(ry) / bound);
    else
      EXPECT_LT(std::abs(yf[i]), 1e-36) << v;
    // GELU' = Phi + x phi crosses zero near x = -0.75: relative to its terms' size there.
    const double terms = cdf + std::abs(v) * std::exp(-v * v / 2) / std::sqrt(2 * M_PI);
    if (std::abs(rd) > 1e-36)
      worst_d = std::max(worst_d, std::abs(df[i] - rd) / terms / bound);
    else
      EXPECT_LT(std::abs(df[i]), 1e-35) << v;
    // float64 keeps std::erf: the double results are the references' own.
    EXPECT_NEAR(y[i], xs[i] * 0.5 * std::erfc(-xs[i] / std::sqrt(2.0)),
                1e-15 * (1 + std::abs(xs[i])));
  }
  EXPECT_LT(worst_y, 1.0);  // in units of the bound
  EXPECT_LT(worst_d, 1.0);
  // fp16 storage: one rounding of the float result.
  EXPECT_LT(rel_err(gelu(x.to(DType::kFloat16)), y), 1e-3);
}

// softmax(q k^T / sqrt(d)) v per sample and head, head h on columns [h d, (h + 1) d).
std::vector<double> attention_ref(const std::vector<double>& qkv, int64_t n, int64_t t,
                                  int64_t e, int64_t heads) {
  const int64_t d = e / heads;
  std::vector<double> out(static_cast<size_t>(n * t * e));
  auto at = [&](int64_t b, int64_t i, int64_t part, int64_t h, int64_t k) {
    return qkv[(b * t + i) * 3 * e + part * e + h * d + k];
  };
  for (int64_t b = 0; b < n; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < t; ++i) {
        std::vector<double> s(t);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j < t; ++j) {
          for (int64_t k = 0; k < d; ++k) s[j] += at(b, i, 0, h, k) * at(b, j, 1, h, k);
          s[j] /= std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j < t; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t k = 0; k < d; ++k) {
          double o = 0;
          for (int64_t j = 0; j < t; ++j) o += s[j] / sum * at(b, j, 2, h, k);
          out[(b * t + i) * e + h * d + k] = o;
        }
      }
  return out;
}

TEST_F(TransformerKernels, SelfAttentionMatchesLoops) {
  struct G {
    int64_t n, t, e, heads;
  };
  for (const G& g : {G{2, 5, 8, 2}, G{3, 17, 24, 3}, G{1, 65, 64, 8}}) {
    const Tensor qkv = rand({g.n, g.t, 3 * g.e}, -2, 2);
    const std::vector<double> ref = attention_ref(as_double(qkv), g.n, g.t, g.e, g.heads);
    for (auto [dt, tol] : {std::pair{DType::kFloat64, 1e-13}, {DType::kFloat32, 1e-5},
                           {DType::kFloat16, 5e-3}, {DType::kBFloat16, 4e-2}}) {
      auto [out, probs] = self_attention(qkv.to(dt), g.heads);
      EXPECT_LT(rel_err(out, ref), tol) << dtype_name(dt) << " t " << g.t;
      // Each row of probabilities sums to 1.
      const std::vector<double> p = as_double(probs);
      for (int64_t r = 0; r < g.n * g.heads * g.t; r += 7) {
        double s = 0;
        for (int64_t j = 0; j < g.t; ++j) s += p[r * g.t + j];
        EXPECT_NEAR(s, 1.0, 10 * tol) << dtype_name(dt);
      }
    }
  }
}

TEST_F(TransformerKernels, SelfAttentionBackwardInFloatMatchesDouble) {
  const Tensor qkv = rand({2, 9, 24}, -2, 2), dout = rand({2, 9, 8});
  auto [o64, p64] = self_attention(qkv, 2);
  const std::vector<double> ref = as_double(self_attention_backward(dout, qkv, p64, 2));
  for (auto [dt, tol] : {std::pair{DType::kFloat32, 2e-5}, {DType::kFloat16, 1e-2},
                         {DType::kBFloat16, 8e-2}}) {
    auto [o, p] = self_attention(qkv.to(dt), 2);
    EXPECT_LT(rel_err(self_attention_backward(dout.to(dt), qkv.to(dt), p, 2), ref), tol)
        << dtype_name(dt);
  }
}

TEST_F(TransformerKernels, TokensInAndOut) {
  const int64_t n = 3, p = 4, e = 5;
  const Tensor x = rand({n, p, e}), cls = rand({1, 1, e}), pos = rand({1, p + 1, e});
  const std::vector<double> xv = as_double(x), cv = as_double(cls), pv = as_double(pos);
  for (DType dt : {DType::kFloat64, DType::kFloat32}) {
    const Tensor out = embed_tokens(x.to(dt), cls.to(dt), pos.to(dt));
    ASSERT_EQ(out.shape(), (Shape{n, p + 1, e}));
    std::vector<double> ref(static_cast<size_t>(n * (p + 1) * e));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t t = 0; t <= p; ++t)
        for (int64_t j = 0; j < e; ++j)
          ref[(b * (p + 1) + t) * e + j] =
              (t == 0 ? cv[j] : xv[(b * p + t - 1) * e + j]) + pv[t * e + j];
    EXPECT_LT(rel_err(out, ref), dt == DType::kFloat64 ? 1e-15 : 1e-6);
    // The class token back out: row 0 of every sample; its backward puts it back in zeros.
    const Tensor c0 = select_token(out, 0);
    const std::vector<double> ov = as_double(out), c0v = as_double(c0);
    const std::vector<double> back = as_double(select_token_backward(c0, p + 1, 0));
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < e; ++j) {
        EXPECT_EQ(c0v[b * e + j], ov[b * (p + 1) * e + j]);
        EXPECT_EQ(back[b * (p + 1) * e + j], c0v[b * e + j]);
        EXPECT_EQ(back[(b * (p + 1) + 2) * e + j], 0.0);
      }
  }
}

}  // namespace
}  // namespace mlai::tensor
