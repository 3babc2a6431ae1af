// Row-major GEMM with a cuBLASLt epilogue (kernels/gemm.h): bias (+ relu) fused into the
// fully-connected forward, the bias gradient into the weight-gradient GEMM. As in gemm.cu the
// row-major C = op(A) op(B) is computed as the column-major D = C^T = op(B)^T op(A)^T, so C's
// columns are D's rows: a per-column bias of C is cuBLASLt's BIAS epilogue (one value per row
// of D), and the row sums of op(A) are BGRADB (one per column of D, summed over k).
// The algorithm is asked of cuBLASLt's heuristic once per shape and alignment and cached,
// including "none": then the caller falls back to gemm + a separate kernel.
#include <cublasLt.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cublas_types.h"
#include "kernels/cuda_check.h"
#include "kernels/gemm.h"

namespace mlai::kernels::cuda {

namespace {

template <class T, cublasStatus_t (*Destroy)(T)>
class LtDesc {
 public:
  LtDesc() = default;
  ~LtDesc() {
    if (d_ != nullptr) (void)Destroy(d_);
  }
  LtDesc(const LtDesc&) = delete;
  LtDesc& operator=(const LtDesc&) = delete;
  T* out() { return &d_; }
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};
using MatmulDesc = LtDesc<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = LtDesc<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Preference = LtDesc<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

int alignment_of(const void* p) {  // largest power of two dividing the address, up to 256
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 1;
  while (a < 256 && v % (2 * a) == 0) a *= 2;
  return a;
}

using Key = std::tuple<int /*device*/, int /*dtype*/, int /*compute type*/, bool, bool, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int /*epilogue*/, int, int,
                       int, int /*alignments*/, size_t>;
std::mutex& cache_mutex() {
  static std::mutex mu;
  return mu;
}
std::map<Key, std::optional<cublasLtMatmulAlgo_t>>& cache() {
  static std::map<Key, std::optional<cublasLtMatmulAlgo_t>> c;
  return c;
}

template <class V>
void set_attr(const MatmulDesc& d, cublasLtMatmulDescAttributes_t attr, const V& v) {
  MLAI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.get(), attr, &v, sizeof(v)));
}

}  // namespace

template <class T>
bool gemm_epilogue(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, Epilogue epilogue,
                   T* vec, CublasLtHandle handle, void* workspace, size_t workspace_bytes,
                   StreamHandle stream) {
  static_assert(!std::is_same_v<T, double>, "gemm_epilogue: float, half and bfloat16 only");
  if (m <= 0 || n <= 0 || k <= 0 || m > INT_MAX || n > INT_MAX || k > INT_MAX) return false;
  // The bias (or bias-gradient) vector has no alignment preference to declare, and epilogues
  // read it in 16-byte vectors: a less aligned one takes the fallback.
  if (alignment_of(vec) < 16) return false;
  constexpr cudaDataType_t type = cublas_data_type<T>();
  // Column-major operands: A_cm is the row-major B (op_b), B_cm the row-major A (op_a).
  const cublasOperation_t op_acm = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_bcm = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  MatmulDesc desc;
  const cublasComputeType_t compute = compute_type_32<T>();
  MLAI_CUBLAS_CHECK(cublasLtMatmulDescCreate(desc.out(), compute, CUDA_R_32F));
  set_attr(desc, CUBLASLT_MATMUL_DESC_TRANSA, op_acm);
  set_attr(desc, CUBLASLT_MATMUL_DESC_TRANSB, op_bcm);
  cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
  if (epilogue == Epilogue::kBiasRelu) ep = CUBLASLT_EPILOGUE_RELU_BIAS;
  if (epilogue == Epilogue::kRowSumA) ep = CUBLASLT_EPILOGUE_BGRADB;
  set_attr(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, ep);
  set_attr(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(vec));
  // D is n x m (column-major, ld = ldc); A_cm is n x k after its op, B_cm k x m after its.
  Layout la, lb, ld;
  MLAI_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(la.out(), type, trans_b ? k : n, trans_b ? n : k, ldb));
  MLAI_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(lb.out(), type, trans_a ? m : k, trans_a ? k : m, lda));
  MLAI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(ld.out(), type, n, m, ldc));

  int device = 0;
  MLAI_CUDA_CHECK(cudaGetDevice(&device));
  // Each operand's alignment is part of the key: the heuristic's answer depends on it (the
  // bias or bias-gradient pointer's too, cublasLt.h says).
  const int align_a = alignment_of(a), align_b = alignment_of(b), align_c = alignment_of(c);
  const int align_vec = alignment_of(vec);
  const Key key{device,
                static_cast<int>(type),
                static_cast<int>(compute),
                trans_a,
                trans_b,
                m,
                n,
                k,
                lda,
                ldb,
                ldc,
                static_cast<int>(epilogue),
                align_a,
                align_b,
                align_c,
                align_vec,
                workspace_bytes};
  std::optional<cublasLtMatmulAlgo_t> algo;
  {
    std::lock_guard<std::mutex> lock(cache_mutex());
    auto it = cache().find(key);
    if (it != cache().end()) {
      algo = it->second;
    } else {
      Preference pref;
      MLAI_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(pref.out()));
      MLAI_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(pref.get(), CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                               &workspace_bytes, sizeof(workspace_bytes)));
      // The operands' real alignment (the heuristic otherwise assumes 256 bytes, and a view at
      // an offset would get an algorithm it cannot run). A_cm is b, B_cm is a, C and D are c.
      const std::pair<cublasLtMatmulPreferenceAttributes_t, int> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
      for (const auto& [attr, bytes_int] : aligns) {
        const auto bytes = static_cast<uint32_t>(bytes_int);
        MLAI_CUBLAS_CHECK(
            cublasLtMatmulPreferenceSetAttribute(pref.get(), attr, &bytes, sizeof(bytes)));
      }
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      // NOT_SUPPORTED (or no result) means this epilogue/type/shape has no kernel: cache "none".
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(handle, desc.get(), la.get(), lb.get(), ld.get(), ld.get(),
                                         pref.get(), 1, &result, &found);
      if (st == CUBLAS_STATUS_SUCCESS && found > 0)
        algo = result.algo;
      else if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_SUCCESS)
        MLAI_CUBLAS_CHECK(st);
      cache().emplace(key, algo);
    }
  }
  if (!algo) return false;
  const float one = 1.0f, zero = 0.0f;
  MLAI_CUBLAS_CHECK(cublasLtMatmul(handle, desc.get(), &one, b, la.get(), a, lb.get(), &zero, c,
                                   ld.get(), c, ld.get(), &*algo, workspace, workspace_bytes,
                                   stream));
  return true;
}

#define MLAI_INSTANTIATE(T)                                                                    \
  template bool gemm_epilogue<T>(bool, bool, int64_t, int64_t, int64_t, const T*, int64_t,     \
                                 const T*, int64_t, T*, int64_t, Epilogue, T*, CublasLtHandle, \
                                 void*, size_t, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
