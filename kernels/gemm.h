// Row-major GEMM: C = alpha * op(A) * op(B) + beta * C, op = transpose when trans_* is set.
// A is M x K after op, B is K x N after op, C is M x N; lda/ldb/ldc are row strides.
// CPU: OpenBLAS sgemm/dgemm (fp16/bf16 go through float). CUDA: cublasGemmEx with fp32 (or
// fp64) accumulation; fp16/bf16 use tensor cores.
#pragma once

#include <cstdint>

#include "kernels/common.h"

struct cublasContext;  // cublasHandle_t is cublasContext*

namespace mlai::kernels {

using CublasHandle = cublasContext*;

namespace cpu {
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc);
}  // namespace cpu

namespace cuda {
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, double beta, T* c, int64_t ldc,
          CublasHandle handle, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
