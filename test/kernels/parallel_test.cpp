// The CPU kernels' thread pool (kernels/parallel.h): every block runs once, nested and concurrent
// callers run inline, and the threaded kernels (convolution's im2col/col2im, batch norm, the
// elementwise ops) give the same bits on the pool as on one thread, on sizes cut into several
// blocks, and match plain reference loops there (so block edges lose nothing). ctest also runs
// this suite with MLAI_NUM_THREADS=3.
#include "kernels/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace mlai::kernels::cpu {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// OpenBLAS on one thread while it lives (as configure_threads sets it for mlai_train), so the
// gemm splits its products on the pool; the count it had before after.
struct OneBlasThread {
  int saved = blas_threads();
  OneBlasThread() { set_blas_threads(1); }
  ~OneBlasThread() { set_blas_threads(saved); }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;
};

// Runs fn once on this thread alone and once with the pool.
template <class F>
auto on_one_thread_and_pool(F fn) {
  const int saved = max_threads();
  set_max_threads(1);
  auto one = fn();
  set_max_threads(pool_threads());
  auto pooled = fn();
  set_max_threads(saved);
  return std::pair(one, pooled);
}

TEST(ParallelKernels, EveryBlockRunsExactlyOnceAndNestedCallsRunInline) {
  std::vector<std::atomic<int>> hits(1000);
  run_blocks(1000, [&](int64_t k) {
    hits[static_cast<size_t>(k)]++;
    std::atomic<int> inner{0};
    run_blocks(3, [&](int64_t) { inner++; });  // from inside a block: inline, all 3 run
    EXPECT_EQ(inner.load(), 3);
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  // Two threads calling at once: one gets the pool, the other runs inline; both complete.
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int r = 0; r < 50; ++r) run_blocks(64, [&](int64_t k) { total += k; });
  };
  std::thread other(caller);
  caller();
  other.join();
  EXPECT_EQ(total.load(), 2 * 50 * (63 * 64 / 2));
  EXPECT_GE(pool_threads(), 1);
}

TEST(ParallelKernels, AnExceptionInABlockReachesTheCallerAfterEveryBlockIsDone) {
  std::atomic<int> ran{0};
  EXPECT_THROW(run_blocks(200,
                          [&](int64_t k) {
                            ran++;
                            if (k == 17) throw std::runtime_error("block 17");
                          }),
               std::runtime_error);
  // On the pool the others still ran (nobody touches fn after the return); inline (one CPU)
  // the loop stopped at the throw.
  EXPECT_EQ(ran.load(), pool_threads() > 1 ? 200 : 18);
  std::atomic<int> after{0};  // and the pool is usable again
  run_blocks(8, [&](int64_t) { after++; });
  EXPECT_EQ(after.load(), 8);
}

TEST(ParallelKernels, RanksSharingANodeShareItsCpus) {
  // The environment wins: MLAI_NUM_THREADS, then OMP_NUM_THREADS.
  EXPECT_EQ(default_threads(3, 8, 32, 32, 4), 3);
  EXPECT_EQ(default_threads(0, 8, 32, 32, 4), 8);
  // One process: every CPU it may use.
  EXPECT_EQ(default_threads(0, 0, 32, 32, 1), 32);
  // 4 unbound ranks (plain mpirun) see all 32 CPUs: 8 each, not 32 each.
  EXPECT_EQ(default_threads(0, 0, 32, 32, 4), 8);
  EXPECT_EQ(default_threads(0, 0, 2, 2, 4), 1);  // never 0
  // A rank bound to 8 CPUs of its own (srun, --bind-to): those 8.
  EXPECT_EQ(default_threads(0, 0, 8, 32, 4), 8);
}

TEST(ParallelKernels, ParallelBlocksCutByGrainOnly) {
  std::vector<std::pair<int64_t, int64_t>> seen(4, {-1, -1});
  parallel_blocks(10, 3, [&](int64_t k, int64_t b, int64_t e) {
    seen[static_cast<size_t>(k)] = {b, e};
  });
  EXPECT_EQ(seen, (std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 6}, {6, 9}, {9, 10}}));
  int calls = 0;
  parallel_for(0, 3, [&](int64_t, int64_t) { ++calls; });
  EXPECT_EQ(calls, 0);
}

// Direct convolution in double: the reference for the im2col/col2im versions.
struct Conv {
  Conv2dGeometry g;
  double x(const std::vector<float>& v, int64_t b, int64_t y, int64_t xx, int64_t c) const {
    return v[static_cast<size_t>(((b * g.h + y) * g.w + xx) * g.c_in + c)];
  }
};

// With OpenBLAS single-threaded (as configure_threads leaves it), large products run as blocks
// of C's rows or columns on the pool: every transpose, split either way, matches a float64
// product and has the same bits on one thread as on the pool (and as with beta = 1 on top).
TEST(ParallelKernels, GemmSplitOnThePoolMatchesAndKeepsItsBits) {
  const OneBlasThread one_blas_thread;
  // (m, n, k): m > n splits rows, n > m columns; both above 2^21 multiply-adds; odd sizes.
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{515, 37, 301}, {29, 613, 257}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                   (ta ? " A^T" : "") + (tb ? " B^T" : ""));
      const auto a = random_vector(static_cast<size_t>(m * k), 11);
      const auto b = random_vector(static_cast<size_t>(k * n), 12);
      const auto c0 = random_vector(static_cast<size_t>(m * n), 13);
      const int64_t lda = ta ? m : k, ldb = tb ? k : n;
      auto run = [&](double beta) {
        std::vector<float> c = c0;
        gemm<float>(ta, tb, m, n, k, 1.0, a.data(), lda, b.data(), ldb, beta, c.data(), n);
        return c;
      };
      auto [c1, cp] = on_one_thread_and_pool([&] { return run(1.0); });
      EXPECT_TRUE(same_bits(c1, cp));
      double err = 0, scale = 0;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = c0[static_cast<size_t>(i * n + j)];
          for (int64_t q = 0; q < k; ++q)
            acc += static_cast<double>(a[static_cast<size_t>(ta ? q * m + i : i * k + q)]) *
                   b[static_cast<size_t>(tb ? j * k + q : q * n + j)];
          err = std::max(err, std::fabs(acc - cp[static_cast<size_t>(i * n + j)]));
          scale = std::max(scale, std::fabs(acc));
        }
      EXPECT_LT(err / scale, 1e-5);
    }
  }
}

// Narrow but deep products (a weight gradient's shape: few rows and columns, a long sum) are
// cut along their depth: partial products added into C in block order. Two blocks and the
// most (eight), each transpose, C with a row stride wider than its rows (the gap untouched),
// beta 1 and beta 0 over NaNs (never read): the double-precision sum to float's rounding, and
// the same bits on one thread as on the pool.
TEST(ParallelKernels, DeepGemmSplitsItsDepthAndKeepsItsBits) {
  const OneBlasThread one_blas_thread;
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{45, 61, 7001}, {63, 70, 20011}}) {
    for (int t = 0; t < 8; ++t) {
      const bool ta = t & 1, tb = t & 2, zero_beta = t & 4;
      SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
                   (ta ? " A^T" : "") + (tb ? " B^T" : "") + (zero_beta ? " beta 0" : " beta 1"));
      const auto a = random_vector(static_cast<size_t>(m * k), 21);
      const auto b = random_vector(static_cast<size_t>(k * n), 22);
      const int64_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n + 3;
      std::vector<float> c0 = random_vector(static_cast<size_t>(m * ldc), 23);
      if (zero_beta)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) c0[static_cast<size_t>(i * ldc + j)] = NAN;
      auto run = [&] {
        std::vector<float> c = c0;
        gemm<float>(ta, tb, m, n, k, 0.5, a.data(), lda, b.data(), ldb, zero_beta ? 0.0 : 1.0,
                    c.data(), ldc);
        return c;
      };
      auto [c1, cp] = on_one_thread_and_pool(run);
      EXPECT_TRUE(same_bits(c1, cp));
      double err = 0, scale = 0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t q = 0; q < k; ++q)
            acc += static_cast<double>(a[static_cast<size_t>(ta ? q * m + i : i * k + q)]) *
                   b[static_cast<size_t>(tb ? j * k + q : q * n + j)];
          acc = 0.5 * acc + (zero_beta ? 0.0 : c0[static_cast<size_t>(i * ldc + j)]);
          const float got = cp[static_cast<size_t>(i * ldc + j)];
          ASSERT_TRUE(std::isfinite(got)) << i << ", " << j;  // (beta 0 never reads C)
          err = std::max(err, std::fabs(acc - got));
          scale = std::max(scale, std::fabs(acc));
        }
        for (int64_t j = n; j < ldc; ++j)  // (the gap between rows is not C's)
          EXPECT_EQ(cp[static_cast<size_t>(i * ldc + j)], c0[static_cast<size_t>(i * ldc + j)]);
      }
      EXPECT_LT(err / scale, 1e-5);
    }
  }
}

TEST(ParallelKernels, ConvolutionMatchesDirectLoopsAndKeepsItsBitsOnThePool) {
  Conv2dGeometry g;  // 64 input channels, 32 wide: col2im's 16-row blocks split each image
  g.n = 2;
  g.h = 65;
  g.w = 32;
  g.c_in = 64;
  g.c_out = 8;
  g.kh = g.kw = 3;
  for (auto [stride, pad] : {std::pair{1, 1}, std::pair{2, 1}, std::pair{2, 0}}) {
    g.stride = stride;
    g.pad = pad;
    SCOPED_TRACE("stride " + std::to_string(stride) + " pad " + std::to_string(pad));
    const int64_t oh = g.out_h(), ow = g.out_w();
    const auto x = random_vector(static_cast<size_t>(g.n * g.h * g.w * g.c_in), 1);
    const auto w = random_vector(static_cast<size_t>(g.c_out * g.kh * g.kw * g.c_in), 2);
    const auto dy = random_vector(static_cast<size_t>(g.n * oh * ow * g.c_out), 3);
    auto [y1, yp] = on_one_thread_and_pool([&] {
      std::vector<float> y(dy.size());
      conv2d_forward(x.data(), w.data(), static_cast<const float*>(nullptr), y.data(), g);
      return y;
    });
    auto [dx1, dxp] = on_one_thread_and_pool([&] {
      std::vector<float> dx(x.size());
      conv2d_backward_data(dy.data(), w.data(), dx.data(), g);
      return dx;
    });
    EXPECT_TRUE(same_bits(y1, yp));
    EXPECT_TRUE(same_bits(dx1, dxp));
    // dx[b, iy, ix, ci] = sum over taps that read it of dy[b, oy, ox, co] * w[co, i, j, ci].
    std::vector<double> ref(x.size(), 0.0);
    double y_err = 0, y_scale = 0;
    for (int64_t b = 0; b < g.n; ++b)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t co = 0; co < g.c_out; ++co) {
            const size_t yi = static_cast<size_t>(((b * oh + oy) * ow + ox) * g.c_out + co);
            double acc = 0;
            for (int64_t i = 0; i < g.kh; ++i)
              for (int64_t j = 0; j < g.kw; ++j) {
                const int64_t iy = oy * stride - pad + i, ix = ox * stride - pad + j;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                for (int64_t ci = 0; ci < g.c_in; ++ci) {
                  const size_t xi = static_cast<size_t>(((b * g.h + iy) * g.w + ix) * g.c_in + ci);
                  const double wv =
                      w[static_cast<size_t>(((co * g.kh + i) * g.kw + j) * g.c_in + ci)];
                  acc += x[xi] * wv;
                  ref[xi] += dy[yi] * wv;
                }
              }
            y_err = std::max(y_err, std::fabs(acc - y1[yi]));
            y_scale = std::max(y_scale, std::fabs(acc));
          }
    double dx_err = 0, dx_scale = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      dx_err = std::max(dx_err, std::fabs(ref[i] - dx1[i]));
      dx_scale = std::max(dx_scale, std::fabs(ref[i]));
    }
    EXPECT_LT(y_err / y_scale, 1e-5);
    EXPECT_LT(dx_err / dx_scale, 1e-5);
  }
}

// The depthwise kernel's three passes on one thread and on the pool, with a filter gradient
// summed over many blocks of rows (3,200 rows: over the 64-block cap, so blocks hold 50 rows):
// the same bits.
TEST(ParallelKernels, DepthwiseConvolutionKeepsItsBitsOnThePool) {
  Conv2dGeometry g;
  g.n = 80;
  g.h = g.w = 40;
  g.c_in = g.c_out = g.groups = 24;
  g.kh = g.kw = 3;
  g.stride = 1;
  g.pad = 1;
  ASSERT_TRUE(g.depthwise());
  const auto x = random_vector(static_cast<size_t>(g.n * g.h * g.w * g.c_in), 4);
  const auto w = random_vector(static_cast<size_t>(g.c_out * g.kh * g.kw), 5);
  const auto dy = random_vector(static_cast<size_t>(g.n * g.out_h() * g.out_w() * g.c_out), 6);
  auto [y1, yp] = on_one_thread_and_pool([&] {
    std::vector<float> y(dy.size());
    conv2d_forward(x.data(), w.data(), static_cast<const float*>(nullptr), y.data(), g);
    return y;
  });
  auto [dx1, dxp] = on_one_thread_and_pool([&] {
    std::vector<float> dx(x.size());
    conv2d_backward_data(dy.data(), w.data(), dx.data(), g);
    return dx;
  });
  auto [dw1, dwp] = on_one_thread_and_pool([&] {
    std::vector<float> dw(w.size());
    conv2d_backward_filter(x.data(), dy.data(), dw.data(), static_cast<float*>(nullptr), g);
    return dw;
  });
  EXPECT_TRUE(same_bits(y1, yp));
  EXPECT_TRUE(same_bits(dx1, dxp));
  EXPECT_TRUE(same_bits(dw1, dwp));
  // The filter gradient against a double sum of the definition for a few channels.
  for (int64_t c : {0, 11, 23}) {
    double ref = 0;  // tap (1, 1): x under the filter's centre
    for (int64_t r = 0; r < g.n * g.h * g.w; ++r)
      ref +=
          double(dy[static_cast<size_t>(r * g.c_in + c)]) * x[static_cast<size_t>(r * g.c_in + c)];
    EXPECT_NEAR(dw1[static_cast<size_t>(c * 9 + 4)], ref, 1e-5 * std::fabs(ref) + 1e-3);
  }
}

TEST(ParallelKernels, BatchNormKeepsItsBitsOnThePoolAndMatchesTwoPassStatistics) {
  const int64_t rows = 4099, c = 24;  // 1365-row blocks: 4 of them, the last short
  const auto x = random_vector(static_cast<size_t>(rows * c), 4);
  const auto z = random_vector(x.size(), 5);
  const auto dy = random_vector(x.size(), 6);
  std::vector<float> gamma(static_cast<size_t>(c), 1.5f), beta(static_cast<size_t>(c), 0.25f);
  struct Out {
    std::vector<float> y, mean, inv_std, dx, dz, dgamma, dbeta;
    bool operator==(const Out& o) const {
      return same_bits(y, o.y) && same_bits(mean, o.mean) && same_bits(inv_std, o.inv_std) &&
             same_bits(dx, o.dx) && same_bits(dz, o.dz) && same_bits(dgamma, o.dgamma) &&
             same_bits(dbeta, o.dbeta);
    }
  };
  auto [one, pooled] = on_one_thread_and_pool([&] {
    Out o;
    o.y.resize(x.size());
    o.mean.resize(static_cast<size_t>(c));
    o.inv_std.resize(static_cast<size_t>(c));
    batchnorm_forward_train(x.data(), gamma.data(), beta.data(), o.y.data(),
                            static_cast<float*>(nullptr), static_cast<float*>(nullptr),
                            o.mean.data(), o.inv_std.data(), rows, c, 0.1, 1e-5, z.data(), true);
    o.dx.resize(x.size());
    o.dz.resize(x.size());
    o.dgamma.resize(static_cast<size_t>(c));
    o.dbeta.resize(static_cast<size_t>(c));
    batchnorm_backward(x.data(), dy.data(), gamma.data(), o.mean.data(), o.inv_std.data(),
                       o.dx.data(), o.dgamma.data(), o.dbeta.data(), rows, c, o.y.data(),
                       o.dz.data());
    return o;
  });
  EXPECT_TRUE(one == pooled);
  for (int64_t ch = 0; ch < c; ++ch) {  // the statistics against a plain two-pass loop
    double mean = 0, var = 0, dbeta = 0;
    for (int64_t r = 0; r < rows; ++r) mean += x[static_cast<size_t>(r * c + ch)];
    mean /= static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const double d = x[static_cast<size_t>(r * c + ch)] - mean;
      var += d * d;
      const size_t i = static_cast<size_t>(r * c + ch);
      dbeta += one.y[i] > 0 ? dy[i] : 0.0;  // the gradient through the relu
    }
    var /= static_cast<double>(rows);
    EXPECT_NEAR(one.mean[static_cast<size_t>(ch)], mean, 1e-7);
    EXPECT_NEAR(one.inv_std[static_cast<size_t>(ch)], 1 / std::sqrt(var + 1e-5), 1e-5);
    EXPECT_NEAR(one.dbeta[static_cast<size_t>(ch)], dbeta, 1e-4);
  }
}

TEST(ParallelKernels, ElementwiseOpsKeepTheirBitsOnThePool) {
  const int64_t rows = 3000, cols = 40;  // 120K elements: 4 blocks
  const auto a = random_vector(static_cast<size_t>(rows * cols), 7);
  const auto b = random_vector(a.size(), 8);
  const auto bias = random_vector(static_cast<size_t>(cols), 9);
  auto [one, pooled] = on_one_thread_and_pool([&] {
    std::vector<float> out(a.size()), r(a.size()), ba(a.size()), ax = b;
    add(a.data(), b.data(), out.data(), rows * cols);
    relu_backward(a.data(), b.data(), r.data(), rows * cols);
    bias_act(a.data(), bias.data(), ba.data(), rows, cols, true);
    axpy(0.5, a.data(), ax.data(), rows * cols);
    out.insert(out.end(), r.begin(), r.end());
    out.insert(out.end(), ba.begin(), ba.end());
    out.insert(out.end(), ax.begin(), ax.end());
    return out;
  });
  EXPECT_TRUE(same_bits(one, pooled));
  const size_t n = a.size();
  for (size_t i = 0; i < n; i += 997) {  // and they are the ops
    EXPECT_EQ(one[i], a[i] + b[i]);
    EXPECT_EQ(one[n + i], b[i] > 0 ? a[i] : 0.0f);
    const float v = a[i] + bias[i % static_cast<size_t>(cols)];
    EXPECT_EQ(one[2 * n + i], v > 0 ? v : 0.0f);
  }
}

}  // namespace
}  // namespace mlai::kernels::cpu
