// SyncBatchNorm on one process: with one rank it is batch norm; with a stand-in allreduce that
// plays a second rank holding the same batch, the statistics are unchanged, the count doubles
// (the unbiased running variance says so) and the gradients equal plain batch norm's; and it
// passes the float64 gradient check. The two-rank MPI test is in test/dist/ddp_test.cpp.
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

struct BnRun {
  Tensor y, dx, dgamma, dbeta, rm, rv;
};

// Forward and backward of plain or synced batch norm on the same inputs and upstream gradient.
BnRun run(const Tensor& x0, const Tensor& g0, const Tensor& b0, const Tensor& dy, int world,
        const SumOverRanks& sum) {
  Variable x(x0.clone(), true), g(g0.clone(), true), b(b0.clone(), true);
  const int64_t c = x0.size(-1);
  BnRun r;
  r.rm = Tensor::zeros({c}, g0.dtype());
  r.rv = Tensor::full({c}, 1.0, g0.dtype());
  Variable y = sum ? sync_batchnorm(x, g, b, r.rm, r.rv, 0.1, 1e-5, world, sum)
                   : batchnorm(x, g, b, r.rm, r.rv, true, 0.1, 1e-5);
  y.backward(dy);
  r.y = y.data();
  r.dx = x.grad();
  r.dgamma = g.grad();
  r.dbeta = b.grad();
  return r;
}

class SyncBatchNorm : public ::testing::TestWithParam<DType> {};

TEST_P(SyncBatchNorm, OneRankIsBatchNormAndATwinRankKeepsTheStatistics) {
  const DType dt = GetParam();
  const double tol = dt == DType::kFloat64 ? 1e-12 : 2e-5;
  tensor::Generator gen(5);
  const Tensor x = tensor::add(Tensor::normal({3, 4, 5, 6}, 0.0, 2.0, gen, dt),
                               Tensor::full({3, 4, 5, 6}, 3.0, dt));  // a mean far from 0
  const Tensor gamma = Tensor::uniform({6}, 0.5, 1.5, gen, dt), beta = Tensor::uniform({6}, -1, 1, gen, dt);
  const Tensor dy = Tensor::normal({3, 4, 5, 6}, 0.0, 1.0, gen, dt);
  const BnRun plain = run(x, gamma, beta, dy, 1, nullptr);
  int calls = 0;
  const BnRun one = run(x, gamma, beta, dy, 1, [&](Tensor&) { ++calls; });
  EXPECT_EQ(calls, 2);  // one allreduce in forward, one in backward
  for (auto [a, b, what] : {std::tuple{one.y, plain.y, "y"}, {one.dx, plain.dx, "dx"},
                            {one.dgamma, plain.dgamma, "dgamma"}, {one.dbeta, plain.dbeta, "dbeta"},
                            {one.rm, plain.rm, "running_mean"}, {one.rv, plain.rv, "running_var"}})
    EXPECT_LT(tensor::max_rel_error(a, b), tol) << what;
  // A second rank with the same batch: sums double, means do not.
  const BnRun twin = run(x, gamma, beta, dy, 2, [](Tensor& t) { t.copy_from(tensor::scale(t, 2.0)); });
  for (auto [a, b, what] : {std::tuple{twin.y, plain.y, "y"}, {twin.dx, plain.dx, "dx"},
                            {twin.dgamma, plain.dgamma, "dgamma"}, {twin.dbeta, plain.dbeta, "dbeta"},
                            {twin.rm, plain.rm, "running_mean"}})
    EXPECT_LT(tensor::max_rel_error(a, b), tol) << what;
  // Unbiased running variance: 0.9 + 0.1 * var * N / (N - 1) with N = 60 rows for one rank, 120
  // for two: the difference is exactly that of the two factors.
  const auto v1 = one.rv.to_double_vector(), v2 = twin.rv.to_double_vector();
  for (size_t k = 0; k < v1.size(); ++k) {
    const double var = (v1[k] - 0.9) / 0.1 * 59.0 / 60.0;
    EXPECT_NEAR(v2[k], 0.9 + 0.1 * var * 120.0 / 119.0, 1e-6 * v2[k]) << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SyncBatchNorm, ::testing::Values(DType::kFloat64, DType::kFloat32));

TEST(SyncBatchNormGradcheck, Float64) {
  tensor::Generator gen(9);
  auto rand = [&](const Shape& s) { return Tensor::uniform(s, -1.0, 1.0, gen, DType::kFloat64); };
  const GradcheckResult r = gradcheck(
      [](const std::vector<Variable>& v) {
        Tensor rm = Tensor::zeros({3}, DType::kFloat64), rv = Tensor::full({3}, 1.0, DType::kFloat64);
        // Two identical ranks: the combine path with a count of twice the rows.
        return sync_batchnorm(v[0], v[1], v[2], rm, rv, 0.1, 1e-5, 2,
                              [](Tensor& t) { t.copy_from(tensor::scale(t, 2.0)); });
      },
      {rand({2, 3, 2, 3}), tensor::add(rand({3}), Tensor::full({3}, 1.5, DType::kFloat64)),
       rand({3})});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(SyncBatchNormErrors, UnequalBatchesAndBadArguments) {
  Variable x(Tensor::full({4, 3}, 1.0), true), g(Tensor::full({3}, 1.0), true),
      b(Tensor::zeros({3}), true);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::full({3}, 1.0);
  // The other "rank" reports 5 rows instead of 4.
  EXPECT_THROW(sync_batchnorm(x, g, b, rm, rv, 0.1, 1e-5, 2,
                              [](Tensor& t) {
                                std::vector<double> v = t.to_vector<double>();
                                for (size_t i = 0; i < v.size(); ++i) v[i] *= 2;
                                v.back() += 1;
                                t.copy_from(Tensor::from_vector(v, t.shape()));
                              }),
               std::runtime_error);
  EXPECT_THROW(sync_batchnorm(x, g, b, rm, rv, 0.1, 1e-5, 0, [](Tensor&) {}),
               std::invalid_argument);
}

}  // namespace
}  // namespace mlai::autograd
