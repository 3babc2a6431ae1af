// CPU max-pool and batch-norm kernels against direct loop references on random data (double:
// tight, float: ~1e-5 relative), and batch norm's backward against finite differences.
#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/pool.h"
#include "reference_vectors.h"

namespace mlai::kernels {
namespace {

using namespace reference;  // NOLINT(google-build-using-namespace): the shared test helpers

// ---- max pooling ----

template <class T>
void check_maxpool(double tol) {
  const Pool2dGeometry g{.n = 2, .h = 9, .w = 8, .c = 3, .k = 3, .stride = 2, .pad = 1};
  const int64_t nx = g.n * g.h * g.w * g.c, ny = g.n * g.out_h() * g.out_w() * g.c;
  // Negative integers: many ties, and padding read as 0 instead of -inf would win every edge.
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> level(-4, -1);
  Vec x(nx);
  for (double& v : x) v = level(rng);
  const Vec dy = through<T>(random_vec(ny, 6));
  Vec y_ref(ny), dx_ref(nx, 0.0);
  std::vector<int64_t> arg_ref(ny), hits(nx, 0);
  int ties = 0;
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oy = 0; oy < g.out_h(); ++oy)
      for (int64_t ox = 0; ox < g.out_w(); ++ox)
        for (int64_t ch = 0; ch < g.c; ++ch) {
          const int64_t o = ((b * g.out_h() + oy) * g.out_w() + ox) * g.c + ch;
          double best = -std::numeric_limits<double>::infinity();
          for (int64_t iy = oy * g.stride - g.pad; iy < oy * g.stride - g.pad + g.k; ++iy)
            for (int64_t ix = ox * g.stride - g.pad; ix < ox * g.stride - g.pad + g.k; ++ix) {
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              const int64_t i = ((b * g.h + iy) * g.w + ix) * g.c + ch;
              ties += x[i] == best;
              if (x[i] > best) best = x[i], arg_ref[o] = i;
            }
          y_ref[o] = best;
          dx_ref[arg_ref[o]] += dy[o];
          ++hits[arg_ref[o]];
        }
  ASSERT_GT(ties, 0);
  ASSERT_GT(*std::max_element(hits.begin(), hits.end()), 1) << "no input won two windows";

  std::vector<T> y(ny), dx(nx, T(7));
  std::vector<int64_t> arg(ny);
  cpu::maxpool2d_forward(to<T>(x).data(), y.data(), arg.data(), g);
  cpu::maxpool2d_backward(to<T>(dy).data(), arg.data(), dx.data(), g);
  EXPECT_EQ(widen(y), y_ref);
  EXPECT_EQ(arg, arg_ref);
  EXPECT_LT(rel_err(widen(dx), dx_ref), tol);

  // nan propagates into every window that sees it: input (0, 3, 3, 1) is in the windows of
  // outputs (0, 1..2, 1..2, 1), and nowhere else.
  Vec xn = random_vec(nx, 7);
  const int64_t at = ((0 * g.h + 3) * g.w + 3) * g.c + 1;
  xn[at] = std::nan("");
  cpu::maxpool2d_forward(to<T>(xn).data(), y.data(), arg.data(), g);
  int nans = 0;
  for (int64_t oy = 1; oy <= 2; ++oy)
    for (int64_t ox = 1; ox <= 2; ++ox) {
      const int64_t o = (oy * g.out_w() + ox) * g.c + 1;
      EXPECT_TRUE(std::isnan(y[o]));
      EXPECT_EQ(arg[o], at);
    }
  for (T v : y) nans += std::isnan(v);
  EXPECT_EQ(nans, 4);
}

TEST(MaxPoolKernel, DoubleTiesPaddingOverlapAndNan) { check_maxpool<double>(1e-15); }
TEST(MaxPoolKernel, FloatTiesPaddingOverlapAndNan) { check_maxpool<float>(1e-6); }

// ---- batch norm ----

// Per-channel offsets up to +-40 around a unit-ish spread: float statistics that were not
// accumulated in double, or a one-pass E[x^2] - E[x]^2, would lose the variance.
Vec bn_input(int64_t rows, int64_t c, uint32_t seed) {
  Vec x = random_vec(rows * c, seed);
  const Vec offset = random_vec(c, seed + 1, -40, 40), spread = random_vec(c, seed + 2, 0.7, 2);
  for (int64_t i = 0; i < rows * c; ++i) x[i] = offset[i % c] + spread[i % c] * x[i];
  return x;
}

template <class T>
void check_bn_forward(double tol) {
  using A = acc_t<T>;
  const int64_t rows = 2 * 5 * 7, c = 5;
  const double momentum = 0.1, eps = 1e-5;
  const Vec x = through<T>(bn_input(rows, c, 30)), gamma = through<A>(random_vec(c, 31, 0.5, 2)),
            beta = through<A>(random_vec(c, 32)), rm0 = through<A>(random_vec(c, 33)),
            rv0 = through<A>(random_vec(c, 34, 0.5, 2));
  std::vector<T> y(x.size()), y_eval(x.size());
  std::vector<A> rm = to<A>(rm0), rv = to<A>(rv0), mean(c), inv_std(c);
  cpu::batchnorm_forward_train(to<T>(x).data(), to<A>(gamma).data(), to<A>(beta).data(), y.data(),
                               rm.data(), rv.data(), mean.data(), inv_std.data(), rows, c, momentum,
                               eps);
  cpu::batchnorm_forward_eval(to<T>(x).data(), to<A>(gamma).data(), to<A>(beta).data(),
                              to<A>(rm0).data(), to<A>(rv0).data(), y_eval.data(), rows, c, eps);
  Vec y_ref(x.size()), y_eval_ref(x.size());
  for (int64_t ch = 0; ch < c; ++ch) {
    double m = 0, v = 0, ym = 0, yv = 0;
    for (int64_t r = 0; r < rows; ++r) m += x[r * c + ch] / rows;
    for (int64_t r = 0; r < rows; ++r) v += (x[r * c + ch] - m) * (x[r * c + ch] - m) / rows;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r * c + ch;
      y_ref[i] = (x[i] - m) / std::sqrt(v + eps) * gamma[ch] + beta[ch];
      y_eval_ref[i] = (x[i] - rm0[ch]) / std::sqrt(rv0[ch] + eps) * gamma[ch] + beta[ch];
      const double z = (y[i] - beta[ch]) / gamma[ch];  // the normalised value
      ym += z / rows;
      yv += z * z / rows;
    }
    EXPECT_NEAR(ym, 0, tol) << "channel " << ch;
    EXPECT_NEAR(yv - ym * ym, v / (v + eps), tol) << "channel " << ch;  // 1, less eps's share
    EXPECT_NEAR(mean[ch], m, tol * std::abs(m));
    EXPECT_NEAR(inv_std[ch], 1 / std::sqrt(v + eps), tol);
    EXPECT_NEAR(rm[ch], (1 - momentum) * rm0[ch] + momentum * m, tol * std::abs(m));
    EXPECT_NEAR(rv[ch], (1 - momentum) * rv0[ch] + momentum * v * rows / (rows - 1), tol);
  }
  EXPECT_LT(rel_err(widen(y), y_ref), tol);
  EXPECT_LT(rel_err(widen(y_eval), y_eval_ref), tol);
}

TEST(BatchNormKernel, DoubleForwardTrainAndEval) { check_bn_forward<double>(1e-12); }
TEST(BatchNormKernel, FloatForwardTrainAndEval) { check_bn_forward<float>(1e-5); }

TEST(BatchNormKernel, SingleRowUsesBiasedRunningVarianceAndEmptyBatchThrows) {
  Vec x{1.5, -2}, gamma{2, 3}, beta{0.25, -1}, rm{1, 2}, rv{4, 8}, mean(2), inv_std(2), y(2);
  cpu::batchnorm_forward_train(x.data(), gamma.data(), beta.data(), y.data(), rm.data(), rv.data(),
                               mean.data(), inv_std.data(), 1, 2, 0.1, 1e-5);
  EXPECT_EQ(y, beta);
  EXPECT_DOUBLE_EQ(rm[0], 0.9 * 1 + 0.1 * 1.5);
  EXPECT_DOUBLE_EQ(rv[1], 0.9 * 8);  // the batch's biased variance, 0
  EXPECT_THROW(
      cpu::batchnorm_forward_train(x.data(), gamma.data(), beta.data(), y.data(), rm.data(),
                                   rv.data(), mean.data(), inv_std.data(), 0, 2, 0.1, 1e-5),
      std::invalid_argument);
}

// Forward (training mode) then backward with dy = wt, i.e. the gradients of sum(wt * y).
template <class T>
void bn_grads(const Vec& x, const Vec& gamma, const Vec& beta, const Vec& wt, int64_t c, Vec& dx,
              Vec& dgamma, Vec& dbeta) {
  using A = acc_t<T>;
  const int64_t rows = static_cast<int64_t>(x.size()) / c;
  const auto xt = to<T>(x), wtt = to<T>(wt);
  const auto gt = to<A>(gamma);
  std::vector<T> y(x.size()), dxt(x.size());
  std::vector<A> mean(c), inv_std(c), dg(c), db(c);
  cpu::batchnorm_forward_train(xt.data(), gt.data(), to<A>(beta).data(), y.data(), nullptr, nullptr,
                               mean.data(), inv_std.data(), rows, c, 0.1, 1e-5);
  cpu::batchnorm_backward(xt.data(), wtt.data(), gt.data(), mean.data(), inv_std.data(), dxt.data(),
                          dg.data(), db.data(), rows, c);
  dx = widen(dxt), dgamma = widen(dg), dbeta = widen(db);
}

// The float kernels run on the same (float-representable) data and must agree to ~1e-5.
TEST(BatchNormKernel, BackwardMatchesFiniteDifferencesAndFloat) {
  const int64_t rows = 2 * 3 * 4, c = 3;
  Vec x = through<float>(bn_input(rows, c, 40)), gamma = through<float>(random_vec(c, 41, 0.5, 2)),
      beta = through<float>(random_vec(c, 42));
  const Vec wt = through<float>(random_vec(rows * c, 43));
  auto loss = [&] {
    Vec y(x.size()), mean(c), inv_std(c);
    cpu::batchnorm_forward_train(x.data(), gamma.data(), beta.data(), y.data(), nullptr, nullptr,
                                 mean.data(), inv_std.data(), rows, c, 0.1, 1e-5);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += wt[i] * y[i];
    return l;
  };
  auto numeric = [&](Vec& v) {  // central differences; v is x, gamma or beta
    const double h = 1e-5;
    Vec grad(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      const double keep = v[i];
      v[i] = keep + h;
      const double up = loss();
      v[i] = keep - h;
      grad[i] = (up - loss()) / (2 * h);
      v[i] = keep;
    }
    return grad;
  };
  Vec dx, dgamma, dbeta, dx_f, dgamma_f, dbeta_f;
  bn_grads<double>(x, gamma, beta, wt, c, dx, dgamma, dbeta);
  bn_grads<float>(x, gamma, beta, wt, c, dx_f, dgamma_f, dbeta_f);
  EXPECT_LT(rel_err(dx, numeric(x)), 1e-7);
  EXPECT_LT(rel_err(dgamma, numeric(gamma)), 1e-7);
  EXPECT_LT(rel_err(dbeta, numeric(beta)), 1e-7);
  EXPECT_LT(rel_err(dx_f, dx), 1e-5);
  EXPECT_LT(rel_err(dgamma_f, dgamma), 1e-5);
  EXPECT_LT(rel_err(dbeta_f, dbeta), 1e-5);
}

}  // namespace
}  // namespace mlai::kernels
