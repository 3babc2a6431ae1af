// The CPU twin of gemm_lt.cu (kernels/gemm.h): C = op(A) op(B) with the same epilogues, as
// cpu::gemm followed by one pass: the bias (then relu) added to each row of C, in float as
// bias_act adds it, or the row sums of op(A) accumulated in double and rounded once, as
// sum_dim sums the bias gradient. What the CPU backend computes for a fully-connected layer
// (tensor/linear_ops.cpp: matmul, then bias_act or sum_dim), in one call with the CUDA
// epilogue's arguments, so that the two can be compared directly.
#include <algorithm>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace mlai::kernels::cpu {

template <class T>
void gemm_epilogue(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, Epilogue epilogue,
                   T* vec) {
  gemm<T>(trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
  if (epilogue == Epilogue::kRowSumA) {
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += to_acc(trans_a ? a[p * lda + i] : a[i * lda + p]);
      vec[i] = from_acc<T>(s);
    }
    return;
  }
  const bool relu = epilogue == Epilogue::kBiasRelu;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      auto v = to_acc(c[i * ldc + j]) + to_acc(vec[j]);
      if (relu) v = std::max(v, decltype(v){0});
      c[i * ldc + j] = from_acc<T>(v);
    }
}

#define MLAI_INSTANTIATE(T)                                                                \
  template void gemm_epilogue<T>(bool, bool, int64_t, int64_t, int64_t, const T*, int64_t, \
                                 const T*, int64_t, T*, int64_t, Epilogue, T*);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
