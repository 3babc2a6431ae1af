// The Vision Transformer's CUDA kernels (kernels/transformer.h) and the batched GEMM
// (kernels/gemm.h gemm_batched) against their CPU twins on the same random inputs, in every float
// dtype, with rows and columns that are not multiples of a warp, a column tile or a 16-byte pack.
// Bounds, relative to max |ref|: float64 1e-12; float32 1e-5 (sums in another order, erf and exp
// from another library); float16 2e-3 and bfloat16 2e-2 (an output ulp); layer norm's statistics
// and parameter gradients are acc_t sums on both sides: float64 1e-12, else 2e-5. The token
// embedding (one add, one rounding) and the token copy are exact.
// Run: build/test/test_kernels --gtest_filter='TransformerCuda*'. Skips without a GPU; a build
// without CUDA has one test, which says so.
#include <gtest/gtest.h>

#ifdef MLAI_WITH_CUDA
#include <cstring>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/transformer.h"
#include "tensor/handles.h"
#include "tensor/ops.h"
#include "tensor/stream.h"
#include "tensor/tensor.h"
#endif

namespace mlai::tensor {
namespace {

#ifdef MLAI_WITH_CUDA

namespace kc = kernels::cpu;
namespace kg = kernels::cuda;
using kernels::acc_t;

const Device kGpu = Device::cuda(0);
const std::vector<DType> kFloats = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                    DType::kBFloat16};

template <class T>
double tol() {
  const DType dt = dtype_of<T>();
  if (dt == DType::kFloat64) return 1e-12;
  if (dt == DType::kFloat32) return 1e-5;
  return dt == DType::kFloat16 ? 2e-3 : 2e-2;
}
template <class T>
double acc_tol() {
  return dtype_of<T>() == DType::kFloat64 ? 1e-12 : 2e-5;
}

// The data of an optional tensor (nullptr when undefined), and its copy on the GPU.
template <class T>
T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
Tensor gpu(const Tensor& t) { return t.defined() ? t.to(kGpu) : Tensor(); }
StreamHandle stream() { return current_stream(kGpu).handle(); }

#define EXPECT_GPU_NEAR(GPU, CPU, TOL)               \
  do {                                               \
    const Tensor g_ = (GPU), c_ = (CPU);             \
    EXPECT_TRUE(g_.device().is_cuda()) << #GPU;      \
    EXPECT_LE(max_rel_error(g_, c_), (TOL)) << #GPU; \
  } while (0)

class TransformerCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
  Generator gen_{2024};
  Tensor rand(const Shape& s, DType dt, double lo = -2, double hi = 2) {
    return Tensor::uniform(s, lo, hi, gen_, dt);
  }

  // Forward, then backward from the CPU's statistics on both sides; the GPU's dgamma and dbeta
  // start as 7s, so a sum added to them instead of written shows.
  template <class T>
  void check_layer_norm(int64_t rows, int64_t cols, bool affine) {
    using A = acc_t<T>;
    const DType dt = dtype_of<T>(), adt = dtype_of<A>();
    SCOPED_TRACE(std::string(dtype_name(dt)) + " " + std::to_string(rows) + "x" +
                 std::to_string(cols) + (affine ? " affine" : " no affine"));
    const double eps = 1e-5;
    const Tensor x = rand({rows, cols}, dt, -1, 3), gx = x.to(kGpu);  // a mean away from 0
    const Tensor gamma = affine ? rand({cols}, adt, 0.5, 1.5) : Tensor();
    const Tensor beta = affine ? rand({cols}, adt, -1, 1) : Tensor();
    const Tensor ggamma = gpu(gamma), gbeta = gpu(beta);
    Tensor y = Tensor::empty({rows, cols}, dt), mean = Tensor::empty({rows}, adt),
           rstd = Tensor::empty({rows}, adt);
    Tensor gy = Tensor::empty({rows, cols}, dt, kGpu), gmean = Tensor::empty({rows}, adt, kGpu),
           grstd = Tensor::empty({rows}, adt, kGpu);
    kc::layer_norm_forward<T>(x.data<T>(), ptr<A>(gamma), ptr<A>(beta), y.data<T>(), mean.data<A>(),
                              rstd.data<A>(), rows, cols, eps);
    kg::layer_norm_forward<T>(gx.data<T>(), ptr<A>(ggamma), ptr<A>(gbeta), gy.data<T>(),
                              gmean.data<A>(), grstd.data<A>(), rows, cols, eps, stream());
    EXPECT_GPU_NEAR(gy, y, tol<T>());
    EXPECT_GPU_NEAR(gmean, mean, acc_tol<T>());
    EXPECT_GPU_NEAR(grstd, rstd, acc_tol<T>());

    const Tensor dy = rand({rows, cols}, dt, -1, 1);
    Tensor dx = Tensor::empty({rows, cols}, dt), gdx = Tensor::empty({rows, cols}, dt, kGpu);
    Tensor dgamma, dbeta, gdgamma, gdbeta;
    if (affine) {
      dgamma = Tensor::empty({cols}, adt);
      dbeta = Tensor::empty({cols}, adt);
      gdgamma = Tensor::full({cols}, 7.0, adt, kGpu);
      gdbeta = Tensor::full({cols}, 7.0, adt, kGpu);
    }
    kc::layer_norm_backward<T>(x.data<T>(), dy.data<T>(), ptr<A>(gamma), mean.data<A>(),
                               rstd.data<A>(), dx.data<T>(), ptr<A>(dgamma), ptr<A>(dbeta), rows,
                               cols);
    const Tensor gdy = dy.to(kGpu), smean = mean.to(kGpu), srstd = rstd.to(kGpu);
    kg::layer_norm_backward<T>(gx.data<T>(), gdy.data<T>(), ptr<A>(ggamma), smean.data<A>(),
                               srstd.data<A>(), gdx.data<T>(), ptr<A>(gdgamma), ptr<A>(gdbeta),
                               rows, cols, stream());
    EXPECT_GPU_NEAR(gdx, dx, tol<T>());
    if (affine) {
      EXPECT_GPU_NEAR(gdgamma, dgamma, acc_tol<T>());
      EXPECT_GPU_NEAR(gdbeta, dbeta, acc_tol<T>());
    }
  }

  // Out of place, then in place (y = x; dx = dy) on a fresh copy of the input.
  template <class T>
  void check_softmax(int64_t rows, int64_t cols) {
    const DType dt = dtype_of<T>();
    SCOPED_TRACE(std::string(dtype_name(dt)) + " " + std::to_string(rows) + "x" +
                 std::to_string(cols));
    const Tensor x = rand({rows, cols}, dt, -4, 4);
    Tensor y = Tensor::empty({rows, cols}, dt), gy = Tensor::empty({rows, cols}, dt, kGpu);
    kc::softmax_rows<T>(x.data<T>(), y.data<T>(), rows, cols);
    const Tensor gx = x.to(kGpu);
    kg::softmax_rows<T>(gx.data<T>(), gy.data<T>(), rows, cols, stream());
    EXPECT_GPU_NEAR(gy, y, tol<T>());
    Tensor inplace = x.to(kGpu);
    kg::softmax_rows<T>(inplace.data<T>(), inplace.data<T>(), rows, cols, stream());
    EXPECT_GPU_NEAR(inplace, y, tol<T>());

    const double scale = 0.125;  // 1 / sqrt(64), a head's
    const Tensor dy = rand({rows, cols}, dt, -1, 1), sy = y.to(kGpu), gdy = dy.to(kGpu);
    Tensor dx = Tensor::empty({rows, cols}, dt), gdx = Tensor::empty({rows, cols}, dt, kGpu);
    kc::softmax_rows_backward<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols, scale);
    kg::softmax_rows_backward<T>(sy.data<T>(), gdy.data<T>(), gdx.data<T>(), rows, cols, scale,
                                 stream());
    EXPECT_GPU_NEAR(gdx, dx, tol<T>());
    Tensor dinplace = dy.to(kGpu);
    kg::softmax_rows_backward<T>(sy.data<T>(), dinplace.data<T>(), dinplace.data<T>(), rows, cols,
                                 scale, stream());
    EXPECT_GPU_NEAR(dinplace, dx, tol<T>());
  }

  // Over whole tensors and over views one element in (misaligned: the scalar path).
  template <class T>
  void check_gelu(int64_t n) {
    const DType dt = dtype_of<T>();
    SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
    const Tensor x = rand({n}, dt, -4, 4), dy = rand({n}, dt, -1, 1);
    const Tensor gx = x.to(kGpu), gdy = dy.to(kGpu);
    for (int64_t at : {int64_t{0}, int64_t{1}}) {
      if (at >= n) continue;
      const int64_t len = n - at;
      const Tensor xv = x.slice(at, n), dyv = dy.slice(at, n);
      const Tensor gxv = gx.slice(at, n), gdyv = gdy.slice(at, n);
      Tensor y = Tensor::empty({len}, dt), gy = Tensor::empty({len}, dt, kGpu);
      kc::gelu<T>(xv.data<T>(), y.data<T>(), len);
      kg::gelu<T>(gxv.data<T>(), gy.data<T>(), len, stream());
      EXPECT_GPU_NEAR(gy, y, tol<T>());
      Tensor dx = Tensor::empty({len}, dt), gdx = Tensor::empty({len}, dt, kGpu);
      kc::gelu_backward<T>(dyv.data<T>(), xv.data<T>(), dx.data<T>(), len);
      kg::gelu_backward<T>(gdyv.data<T>(), gxv.data<T>(), gdx.data<T>(), len, stream());
      EXPECT_GPU_NEAR(gdx, dx, tol<T>());
    }
  }

  template <class T>
  void check_tokens(int64_t n, int64_t patches, int64_t e) {
    const DType dt = dtype_of<T>();
    SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n) +
                 " patches=" + std::to_string(patches) + " e=" + std::to_string(e));
    const int64_t tokens = patches + 1;
    const Tensor x = rand({n, patches, e}, dt), cls = rand({e}, dt), pos = rand({tokens, e}, dt);
    Tensor out = Tensor::empty({n, tokens, e}, dt), gout = Tensor::empty({n, tokens, e}, dt, kGpu);
    kc::embed_tokens<T>(x.data<T>(), cls.data<T>(), pos.data<T>(), out.data<T>(), n, patches, e);
    const Tensor gx = x.to(kGpu), gcls = cls.to(kGpu), gpos = pos.to(kGpu);
    kg::embed_tokens<T>(gx.data<T>(), gcls.data<T>(), gpos.data<T>(), gout.data<T>(), n, patches, e,
                        stream());
    EXPECT_GPU_NEAR(gout, out, 0.0);

    // The patches' rows of out into a wider buffer at row 2 (its other rows keep their values),
    // and the class token's row back out.
    const int64_t wide = tokens + 3;
    Tensor dst = rand({n, wide, e}, dt), gdst = dst.to(kGpu);
    kc::copy_tokens<T>(out.data<T>(), tokens, 1, dst.data<T>(), wide, 2, patches, n, e);
    kg::copy_tokens<T>(gout.data<T>(), tokens, 1, gdst.data<T>(), wide, 2, patches, n, e, stream());
    EXPECT_GPU_NEAR(gdst, dst, 0.0);
    Tensor head = Tensor::empty({n, e}, dt), ghead = Tensor::empty({n, e}, dt, kGpu);
    kc::copy_tokens<T>(out.data<T>(), tokens, 0, head.data<T>(), 1, 0, 1, n, e);
    kg::copy_tokens<T>(gout.data<T>(), tokens, 0, ghead.data<T>(), 1, 0, 1, n, e, stream());
    EXPECT_GPU_NEAR(ghead, head, 0.0);
  }

  // Dense operands, or padded ones: every leading dimension wider than its rows and every
  // stride wider than its matrix (as the attention's per-head views of a [tokens, 3 e] buffer,
  // here also misaligned). C starts random (beta != 0), and its padding must come back untouched.
  template <class T>
  void check_gemm_batched(bool ta, bool tb, bool padded) {
    const DType dt = dtype_of<T>();
    const int64_t batch = 5, m = 37, n = 65, k = 129;
    SCOPED_TRACE(std::string(dtype_name(dt)) + " ta=" + std::to_string(ta) +
                 " tb=" + std::to_string(tb) + (padded ? " padded" : " dense"));
    const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k,
                  b_cols = tb ? k : n;
    const int64_t p = padded ? 1 : 0;
    const int64_t lda = a_cols + 3 * p, ldb = b_cols + p, ldc = n + 2 * p;
    const int64_t sa = a_rows * lda + 5 * p, sb = b_rows * ldb + 7 * p, sc = m * ldc + p;
    const Tensor a = rand({batch * sa}, dt, -1, 1), b = rand({batch * sb}, dt, -1, 1);
    Tensor c = rand({batch * sc}, dt, -1, 1);
    const Tensor ga = a.to(kGpu), gb = b.to(kGpu);
    Tensor gc = c.to(kGpu);
    kc::gemm_batched<T>(ta, tb, m, n, k, 0.5, a.data<T>(), lda, sa, b.data<T>(), ldb, sb, -1.25,
                        c.data<T>(), ldc, sc, batch);
    kg::gemm_batched<T>(ta, tb, m, n, k, 0.5, ga.data<T>(), lda, sa, gb.data<T>(), ldb, sb, -1.25,
                        gc.data<T>(), ldc, sc, batch, cublas_handle(0), cublas_workspace(0),
                        stream());
    EXPECT_GPU_NEAR(gc, c, tol<T>());
  }
};

TEST_F(TransformerCuda, LayerNormForwardBackward) {
  for (DType dt : kFloats)
    for (const auto& [rows, cols] :
         std::vector<std::pair<int64_t, int64_t>>{{130, 256}, {197, 100}, {3, 1000}, {1, 1}})
      for (bool affine : {true, false})
        MLAI_DISPATCH_FLOAT(dt, "test", { check_layer_norm<scalar_t>(rows, cols, affine); });
}

TEST_F(TransformerCuda, GeluForwardBackward) {
  for (DType dt : kFloats)
    for (int64_t n : {1, 257, 100003})
      MLAI_DISPATCH_FLOAT(dt, "test", { check_gelu<scalar_t>(n); });
}

TEST_F(TransformerCuda, SoftmaxRowsForwardBackward) {
  for (DType dt : kFloats)
    for (const auto& [rows, cols] :
         std::vector<std::pair<int64_t, int64_t>>{{130, 65}, {1000, 197}, {9, 3001}, {3, 1}})
      MLAI_DISPATCH_FLOAT(dt, "test", { check_softmax<scalar_t>(rows, cols); });
}

TEST_F(TransformerCuda, EmbedAndCopyTokensAreExact) {
  for (DType dt : kFloats)
    for (int64_t e : {40, 37})  // whole 16-byte packs in every dtype, and none
      MLAI_DISPATCH_FLOAT(dt, "test", { check_tokens<scalar_t>(3, 49, e); });
}

TEST_F(TransformerCuda, GemmBatchedEveryTranspose) {
  // cuBLAS in float32 arithmetic (no TF32) for this test, whatever the process had set.
  const kernels::MatmulPrecision saved = kernels::float32_matmul_precision();
  kernels::set_float32_matmul_precision(kernels::MatmulPrecision::kHighest);
  for (DType dt : kFloats)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool padded : {false, true})
          MLAI_DISPATCH_FLOAT(dt, "test", { check_gemm_batched<scalar_t>(ta, tb, padded); });
  kernels::set_float32_matmul_precision(saved);
}

// Nothing is launched for empty work (a launch of zero blocks would fail its check), and no
// pointer is read.
TEST_F(TransformerCuda, ZeroSizesAreNoOps) {
  float* none = nullptr;
  kg::layer_norm_forward<float>(none, none, none, none, none, none, 0, 8, 1e-5, stream());
  kg::layer_norm_forward<float>(none, none, none, none, none, none, 8, 0, 1e-5, stream());
  kg::layer_norm_backward<float>(none, none, none, none, none, none, none, none, 0, 0, stream());
  kg::gelu<float>(none, none, 0, stream());
  kg::gelu_backward<float>(none, none, none, 0, stream());
  kg::softmax_rows<float>(none, none, 0, 65, stream());
  kg::softmax_rows_backward<float>(none, none, none, 65, 0, 1.0, stream());
  kg::embed_tokens<float>(none, none, none, none, 0, 49, 40, stream());
  kg::copy_tokens<float>(none, 50, 1, none, 50, 1, 0, 4, 40, stream());
  kg::gemm_batched<float>(false, false, 4, 4, 4, 1.0, none, 4, 16, none, 4, 16, 0.0, none, 4, 16, 0,
                          cublas_handle(0), cublas_workspace(0), stream());
  current_stream(kGpu).synchronize();
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.nbytes() == hb.nbytes() && std::memcmp(ha.data_ptr(), hb.data_ptr(), ha.nbytes()) == 0;
}

// No atomics: layer norm's parameter gradients over many rows give the same bits on every run.
TEST_F(TransformerCuda, LayerNormBackwardIsBitwiseReproducible) {
  const int64_t rows = 4096, cols = 768;
  const Tensor x = rand({rows, cols}, DType::kFloat32).to(kGpu);
  const Tensor dy = rand({rows, cols}, DType::kFloat32).to(kGpu);
  const Tensor gamma = rand({cols}, DType::kFloat32, 0.5, 1.5).to(kGpu);
  Tensor y = Tensor::empty({rows, cols}, DType::kFloat32, kGpu);
  Tensor mean = Tensor::empty({rows}, DType::kFloat32, kGpu),
         rstd = Tensor::empty({rows}, DType::kFloat32, kGpu);
  kg::layer_norm_forward<float>(x.data<float>(), gamma.data<float>(), gamma.data<float>(),
                                y.data<float>(), mean.data<float>(), rstd.data<float>(), rows, cols,
                                1e-5, stream());
  std::vector<Tensor> runs;
  for (int run = 0; run < 2; ++run) {
    Tensor dx = Tensor::empty({rows, cols}, DType::kFloat32, kGpu);
    Tensor dgamma = Tensor::empty({cols}, DType::kFloat32, kGpu),
           dbeta = Tensor::empty({cols}, DType::kFloat32, kGpu);
    kg::layer_norm_backward<float>(x.data<float>(), dy.data<float>(), gamma.data<float>(),
                                   mean.data<float>(), rstd.data<float>(), dx.data<float>(),
                                   dgamma.data<float>(), dbeta.data<float>(), rows, cols, stream());
    runs.insert(runs.end(), {dx, dgamma, dbeta});
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(bitwise_equal(runs[i], runs[i + 3])) << i;
}

#else  // !MLAI_WITH_CUDA

TEST(TransformerCuda, NeedsACudaBuild) { GTEST_SKIP() << "mlai was built without CUDA"; }

#endif

}  // namespace
}  // namespace mlai::tensor
