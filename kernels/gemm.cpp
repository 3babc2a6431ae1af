// CPU twin of kernels/gemm.cu: OpenBLAS sgemm/dgemm in row-major; fp16/bf16 are widened to
// float, multiplied with sgemm and rounded back (slow, but the same maths as the GPU path).
#include "kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

namespace mlai::kernels::cpu {

namespace {
CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }
}  // namespace

void set_blas_threads(int n) { openblas_set_num_threads(std::max(1, n)); }
int blas_threads() { return openblas_get_num_threads(); }

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, double beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), m, n, k, static_cast<float>(alpha), a, lda, b, ldb,
              static_cast<float>(beta), c, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
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

}  // namespace mlai::kernels::cpu
