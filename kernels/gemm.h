// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op = transpose when trans_* is set.
// A is M x K after op, B is K x N after op, C is M x N; lda/ldb/ldc are row strides.
// CPU: OpenBLAS sgemm/dgemm (fp16/bf16 go through float). CUDA: cublasGemmEx with fp32 (or
// fp64) accumulation; fp16/bf16 use tensor cores, float32 too where the matmul precision
// below allows it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

struct cublasContext;    // cublasHandle_t is cublasContext*
struct cublasLtContext;  // cublasLtHandle_t is cublasLtContext*

namespace mlai::kernels {

using CublasHandle = cublasContext*;
using CublasLtHandle = cublasLtContext*;

// What a cuBLASLt GEMM does after the product, in the row-major terms of C = op(A) op(B):
//   kBias, kBiasRelu: C[i, j] += vec[j] (then relu): the fully-connected forward;
//   kRowSumA: also vec[i] = sum over k of op(A)[i, k]: with A = dY^T that is the bias
//             gradient, computed in the weight-gradient GEMM's pass over dY.
enum class Epilogue { kBias, kBiasRelu, kRowSumA };

// PyTorch's torch.set_float32_matmul_precision, process-wide (mlai_train
// --float32-matmul-precision). On CUDA, for float32 data: kHighest keeps GEMMs and convolutions
// in float32 arithmetic; kHigh lets tensor cores round their inputs to TF32 (10 mantissa bits,
// float32 accumulation); kMedium lets GEMMs use bfloat16 products (cuBLAS's FAST_16BF) and
// convolutions TF32 (cuDNN has nothing coarser for float32). Half, bfloat16 and float64 data
// and every CPU kernel ignore it.
enum class MatmulPrecision { kHighest, kHigh, kMedium };
void set_float32_matmul_precision(MatmulPrecision p);
MatmulPrecision float32_matmul_precision();

namespace cpu {
// OpenBLAS's thread count for later GEMMs (see parallel.h's configure_threads).
void set_blas_threads(int n);
int blas_threads();
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc);
// `batch` GEMMs as gemm's, the i-th on a + i * stride_a, b + i * stride_b, c + i * stride_c
// (cuBLAS's strided batched GEMM): the attention's per-sample products for one head.
template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                  int64_t stride_b, double beta, T* c, int64_t ldc, int64_t stride_c,
                  int64_t batch);
// The twin of cuda::gemm_epilogue (kernels/gemm_lt.cpp): the product, then the epilogue in a
// second pass (always available: nothing to fall back from).
template <class T>
void gemm_epilogue(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, Epilogue epilogue,
                   T* vec);
}  // namespace cpu

namespace cuda {
// The handle's own workspace (tensor/handles.h). cublasSetStream resets a handle's workspace
// to cuBLAS's default pool, so gemm sets this one again after binding the stream: cuBLAS then
// never allocates, in particular not while a CUDA graph is being captured.
struct CublasWorkspace {
  void* ptr = nullptr;
  size_t bytes = 0;
};
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc, CublasHandle handle,
          const CublasWorkspace& workspace, StreamHandle stream);
// The CPU twin's batched GEMM, through cublasGemmStridedBatchedEx (accumulation as gemm's).
template <class T>
void gemm_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                  const T* a, int64_t lda, int64_t stride_a, const T* b, int64_t ldb,
                  int64_t stride_b, double beta, T* c, int64_t ldc, int64_t stride_c,
                  int64_t batch, CublasHandle handle, const CublasWorkspace& workspace,
                  StreamHandle stream);

// C = op(A) op(B) (alpha 1, beta 0) with `epilogue` in the same kernel, through cuBLASLt
// (float32 as float32_matmul_precision() says, fp16/bf16 on tensor cores; fp32 accumulation). vec is the bias (read)
// or the row sums (written), in T. Returns false, having enqueued nothing, when cuBLASLt has no
// algorithm for this combination: the caller then runs gemm and a separate kernel. workspace:
// device scratch of workspace_bytes on `stream`.
template <class T>
bool gemm_epilogue(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, Epilogue epilogue,
                   T* vec, CublasLtHandle handle, void* workspace, size_t workspace_bytes,
                   StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
