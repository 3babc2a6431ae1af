// CPU twin of kernels/gemm.cu: OpenBLAS sgemm/dgemm in row-major; fp16/bf16 are widened to
// float, multiplied with sgemm and rounded back (slow, but the same maths as the GPU path).
#include "kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "kernels/parallel.h"

namespace mlai::kernels {

namespace {
std::atomic<MatmulPrecision> g_matmul_precision{MatmulPrecision::kHighest};
}  // namespace

// (Here, in the file every build has; only the CUDA kernels read it.)
void set_float32_matmul_precision(MatmulPrecision p) {
  g_matmul_precision.store(p, std::memory_order_relaxed);
}
MatmulPrecision float32_matmul_precision() {
  return g_matmul_precision.load(std::memory_order_relaxed);
}

}  // namespace mlai::kernels

namespace mlai::kernels::cpu {

namespace {
CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// With OpenBLAS single-threaded (configure_threads makes it so), a large product runs as
// blocks of C's rows (or columns, when there are more of them) on mlai's kernel pool, each one
// OpenBLAS call: one pool of threads for every kernel instead of two taking turns on the cores
// (OpenBLAS's idle threads spin in sched_yield for a while after each product). The blocks
// depend only on the sizes, so the bits do not depend on the thread count. Each call packs the
// other operand again, so a block is at least kMinSide rows (or columns) thick: 32-row blocks
// ran at 57% of one whole call's speed on this project's AVX-512 machine, 256-row ones at 94%.
// Two blocks are enough to use the pool here, since each is big. Returns false when the
// product is small or OpenBLAS has threads of its own: then one plain call.
template <class Call>
bool split_on_pool(int64_t m, int64_t n, int64_t k, Call&& call) {
  constexpr int64_t kBlockWork = int64_t{1} << 23;  // multiply-adds per block, at least
  constexpr int64_t kMinSide = 256;                 // rows or columns per block, at least
  const int64_t work = m * n * k;
  if (blas_threads() != 1) return false;
  const bool rows = m >= n;
  const int64_t side = rows ? m : n;
  const int64_t blocks = std::min(work / kBlockWork, side / kMinSide);
  if (blocks < 2) return false;
  const int64_t step = ((side + blocks - 1) / blocks + 7) / 8 * 8;
  run_blocks(
      num_blocks(side, step),
      [&](int64_t b) {
        const int64_t b0 = b * step;
        call(rows, b0, std::min(side, b0 + step) - b0);
      },
      2);
  return true;
}

// A product too narrow for split_on_pool (under 512 rows and columns) but deep, as a weight
// gradient is (its depth is the batch times the positions; a ViT's 192 x 192 dW sums 8320 of
// them): it ran as one call on one core. Here the depth is cut into blocks, each one OpenBLAS
// call into a partial product (the first into C itself, with beta), and the partials are added
// into C in block order after. The blocks depend only on the sizes, so the bits do not depend
// on the thread count; at most kMaxBlocks of them, so the partials (m x n each, at most 7 MB in
// all) stay small. Returns false when the product is not deep enough, or OpenBLAS has threads
// of its own: then one plain call.
template <class T, class Blas>
bool split_depth_on_pool(Blas blas, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha,
                         const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
                         int64_t ldc) {
  constexpr int64_t kBlockWork = int64_t{1} << 23;  // multiply-adds per block, at least
  constexpr int64_t kMinDepth = 256;                // depth per block, at least
  constexpr int64_t kMaxBlocks = 8;
  if (blas_threads() != 1) return false;
  const int64_t blocks = std::min({m * n * k / kBlockWork, k / kMinDepth, kMaxBlocks});
  if (blocks < 2) return false;
  const int64_t step = ((k + blocks - 1) / blocks + 7) / 8 * 8;
  const int64_t count = num_blocks(k, step);
  const int64_t mn = m * n;
  thread_local std::vector<T> partials;  // (kept between calls: no page faults each time)
  if (partials.size() < static_cast<size_t>((count - 1) * mn))
    partials.resize(static_cast<size_t>((count - 1) * mn));
  T* part = partials.data();
  run_blocks(
      count,
      [&](int64_t blk) {
        const int64_t k0 = blk * step, len = std::min(k, k0 + step) - k0;
        const T* ab = ta ? a + k0 * lda : a + k0;
        const T* bb = tb ? b + k0 : b + k0 * ldb;
        if (blk == 0)
          blas(CblasRowMajor, tr(ta), tr(tb), m, n, len, alpha, ab, lda, bb, ldb, beta, c, ldc);
        else
          blas(CblasRowMajor, tr(ta), tr(tb), m, n, len, alpha, ab, lda, bb, ldb, T(0),
               part + (blk - 1) * mn, n);
      },
      2);
  parallel_for(m, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(n * count, 1)),
               [&](int64_t r0, int64_t r1) {
                 for (int64_t r = r0; r < r1; ++r) {
                   T* row = c + r * ldc;
                   for (int64_t blk = 1; blk < count; ++blk) {
                     const T* p = part + (blk - 1) * mn + r * n;
                     for (int64_t j = 0; j < n; ++j) row[j] += p[j];
                   }
                 }
               });
  return true;
}

// C = op(A) op(B) over rows [o, o + len) of C (rows) or its columns (!rows).
template <class T, class Blas>
void gemm_part(Blas blas, bool rows, int64_t o, int64_t len, bool ta, bool tb, int64_t m,
               int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
               T beta, T* c, int64_t ldc) {
  if (rows)
    blas(CblasRowMajor, tr(ta), tr(tb), len, n, k, alpha, ta ? a + o : a + o * lda, lda, b, ldb,
         beta, c + o * ldc, ldc);
  else
    blas(CblasRowMajor, tr(ta), tr(tb), m, len, k, alpha, a, lda, tb ? b + o * ldb : b + o, ldb,
         beta, c + o, ldc);
}
}  // namespace

void set_blas_threads(int n) { openblas_set_num_threads(std::max(1, n)); }
int blas_threads() { return openblas_get_num_threads(); }

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, double beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const auto al = static_cast<float>(alpha), be = static_cast<float>(beta);
  if (split_on_pool(m, n, k, [&](bool rows, int64_t o, int64_t len) {
        gemm_part<float>(cblas_sgemm, rows, o, len, ta, tb, m, n, k, al, a, lda, b, ldb, be, c,
                         ldc);
      }))
    return;
  if (split_depth_on_pool<float>(cblas_sgemm, ta, tb, m, n, k, al, a, lda, b, ldb, be, c, ldc))
    return;
  cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), m, n, k, al, a, lda, b, ldb, be, c, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (split_on_pool(m, n, k, [&](bool rows, int64_t o, int64_t len) {
        gemm_part<double>(cblas_dgemm, rows, o, len, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta,
                          c, ldc);
      }))
    return;
  if (split_depth_on_pool<double>(cblas_dgemm, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c,
                                  ldc))
    return;
  cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

namespace {
template <class T>
void gemm_widened(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
                  int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc) {
  // Element counts that stay inside each matrix even when its row stride exceeds its width.
  auto extent = [](int64_t rows, int64_t cols, int64_t ld) {
    return static_cast<size_t>(rows == 0 ? 0 : (rows - 1) * ld + cols);
  };
  std::vector<float> fa(extent(ta ? k : m, ta ? m : k, lda)), fb(extent(tb ? n : k, tb ? k : n, ldb)),
      fc(extent(m, n, ldc));
  for (size_t i = 0; i < fa.size(); ++i) fa[i] = to_acc(a[i]);
  for (size_t i = 0; i < fb.size(); ++i) fb[i] = to_acc(b[i]);
  for (size_t i = 0; i < fc.size(); ++i) fc[i] = beta != 0 ? to_acc(c[i]) : 0.f;
  gemm<float>(ta, tb, m, n, k, alpha, fa.data(), lda, fb.data(), ldb, beta, fc.data(), ldc);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) c[r * ldc + j] = from_acc<T>(fc[r * ldc + j]);
}
}  // namespace

template <>
void gemm<Half>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const Half* a,
                int64_t lda, const Half* b, int64_t ldb, double beta, Half* c, int64_t ldc) {
  gemm_widened(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void gemm<BFloat16>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                    const BFloat16* a, int64_t lda, const BFloat16* b, int64_t ldb, double beta,
                    BFloat16* c, int64_t ldc) {
  gemm_widened(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// One product per sample, the samples spread over the pool (a product inside runs on its own
// thread: nested blocks run inline, with the same bounds, so the bits stay the same).
template <class T>
void gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
                  int64_t lda, int64_t stride_a, const T* b, int64_t ldb, int64_t stride_b,
                  double beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (batch == 0 || m == 0 || n == 0) return;
  const int64_t work = std::max<int64_t>(1, m * n * k);
  const int64_t per_block = std::max<int64_t>(1, (int64_t{1} << 20) / work);
  parallel_blocks(batch, per_block, [&](int64_t, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      gemm<T>(ta, tb, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta,
              c + i * stride_c, ldc);
  });
}

#define MLAI_INSTANTIATE(T)                                                                    \
  template void gemm_batched<T>(bool, bool, int64_t, int64_t, int64_t, double, const T*,       \
                                int64_t, int64_t, const T*, int64_t, int64_t, double, T*,      \
                                int64_t, int64_t, int64_t);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
