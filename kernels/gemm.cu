// CUDA twin of kernels/gemm.cpp: row-major GEMM through cublasGemmEx (and its strided batched
// form). A row-major M x N matrix is, read column-major, its N x M transpose, so
// C^T = op(B)^T op(A)^T is one column-major GEMM with the operands swapped. fp32 accumulation
// for float/fp16/bf16 (float32 inputs rounded to TF32 or bf16 only where
// float32_matmul_precision() allows), fp64 for double.
#include <cublas_v2.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/cublas_types.h"
#include "kernels/cuda_check.h"
#include "kernels/gemm.h"

namespace mlai::kernels::cuda {

namespace {

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw std::invalid_argument(std::string("gemm: ") + what + " = " + std::to_string(v) +
                                " is outside cuBLAS's 32-bit range");
  return static_cast<int>(v);
}

void bind_stream(CublasHandle handle, const CublasWorkspace& workspace, StreamHandle stream) {
  MLAI_CUBLAS_CHECK(cublasSetStream(handle, stream));
  if (workspace.ptr != nullptr)  // (cublasSetStream just reset it to the default pool)
    MLAI_CUBLAS_CHECK(cublasSetWorkspace(handle, workspace.ptr, workspace.bytes));
}

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc, CublasHandle handle,
          const CublasWorkspace& workspace, StreamHandle stream) {
  if (m == 0 || n == 0) return;
  // Leading dimensions must be >= 1 even when a matrix is empty (k == 0: then C = beta * C).
  const int im = to_int(m, "m"), in = to_int(n, "n"), ik = to_int(k, "k");
  const int ilda = to_int(lda < 1 ? 1 : lda, "lda"), ildb = to_int(ldb < 1 ? 1 : ldb, "ldb"),
            ildc = to_int(ldc, "ldc");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  constexpr cudaDataType_t type = cublas_data_type<T>();
  bind_stream(handle, workspace, stream);
  if constexpr (std::is_same_v<T, double>) {
    MLAI_CUBLAS_CHECK(cublasGemmEx(handle, op_b, op_a, in, im, ik, &alpha, b, type, ildb, a, type,
                                   ilda, &beta, c, type, ildc, CUBLAS_COMPUTE_64F,
                                   CUBLAS_GEMM_DEFAULT));
  } else {
    // alpha/beta are float for the CUBLAS_COMPUTE_32F types. The handle's math mode stays the
    // default: float32 inputs are rounded (TF32, bf16) only through the compute type.
    const float falpha = static_cast<float>(alpha), fbeta = static_cast<float>(beta);
    MLAI_CUBLAS_CHECK(cublasGemmEx(handle, op_b, op_a, in, im, ik, &falpha, b, type, ildb, a, type,
                                   ilda, &fbeta, c, type, ildc, compute_type_32<T>(),
                                   CUBLAS_GEMM_DEFAULT));
  }
}

template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                  int64_t stride_b, double beta, T* c, int64_t ldc, int64_t stride_c, int64_t batch,
                  CublasHandle handle, const CublasWorkspace& workspace, StreamHandle stream) {
  if (m == 0 || n == 0 || batch == 0) return;
  const int im = to_int(m, "m"), in = to_int(n, "n"), ik = to_int(k, "k");
  const int ilda = to_int(lda < 1 ? 1 : lda, "lda"), ildb = to_int(ldb < 1 ? 1 : ldb, "ldb"),
            ildc = to_int(ldc, "ldc"), ibatch = to_int(batch, "batch");
  const long long sa = stride_a, sb = stride_b, sc = stride_c;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  constexpr cudaDataType_t type = cublas_data_type<T>();
  bind_stream(handle, workspace, stream);
  if constexpr (std::is_same_v<T, double>) {
    MLAI_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, in, im, ik, &alpha, b, type, ildb, sb, a, type, ilda, sa, &beta, c,
        type, ildc, sc, ibatch, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT));
  } else {
    const float falpha = static_cast<float>(alpha), fbeta = static_cast<float>(beta);
    MLAI_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, in, im, ik, &falpha, b, type, ildb, sb, a, type, ilda, sa, &fbeta, c,
        type, ildc, sc, ibatch, compute_type_32<T>(), CUBLAS_GEMM_DEFAULT));
  }
}

#define MLAI_INSTANTIATE(T)                                                                        \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, double, const T*, int64_t,          \
                        const T*, int64_t, double, T*, int64_t, CublasHandle,                      \
                        const CublasWorkspace&, StreamHandle);                                     \
  template void gemm_batched<T>(bool, bool, int64_t, int64_t, int64_t, double, const T*, int64_t,  \
                                int64_t, const T*, int64_t, int64_t, double, T*, int64_t, int64_t, \
                                int64_t, CublasHandle, const CublasWorkspace&, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
