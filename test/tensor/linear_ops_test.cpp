// The fully-connected products with fused epilogues (tensor/linear_ops.h). On the CPU they are
// the plain GEMM followed by bias_act / sum_dim, checked here against those ops and against
// kernels::cpu::gemm_epilogue, the CUDA epilogues' twin. On CUDA the
// cuBLASLt epilogues are checked against the CPU on random data (float32 1e-5 relative to
// max |ref|: only the summation order differs, no TF32; half 2e-3 and bf16 1e-2: one ulp of
// the output, since cuBLASLt adds the bias before rounding and the CPU after) and against the
// GPU's own fallback path; the CUDA tests skip without a GPU.
#include "tensor/linear_ops.h"

#include <gtest/gtest.h>

#include <string>

#include "kernels/gemm.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

struct Dims {
  int64_t batch, in, out;
  std::string str() const {
    return std::to_string(batch) + "x" + std::to_string(in) + "->" + std::to_string(out);
  }
};
// The MLP's layers at batch 64, a 10-class head, and odd sizes (no 16-byte alignment of rows).
const Dims kDims[] = {{64, 784, 1024}, {64, 1024, 10}, {37, 13, 7}, {5, 33, 65}};

class LinearOps : public ::testing::Test {
 protected:
  Generator gen_{31};
  Tensor rand(const Shape& s, DType dt) { return Tensor::uniform(s, -1, 1, gen_, dt); }
};

// kernels::cpu::gemm_epilogue, the twin of the cuBLASLt epilogues, called with the arguments
// linear_ops gives the CUDA one: the CPU path's results, bit for bit.
TEST_F(LinearOps, CpuEpilogueTwinIsTheCpuPath) {
  namespace k = mlai::kernels;
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16})
    for (const Dims& d : kDims)
      for (bool relu_on : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + d.str() + (relu_on ? " relu" : ""));
        const Tensor x = rand({d.batch, d.in}, dt), w = rand({d.out, d.in}, dt);
        const Tensor b = rand({d.out}, dt), gz = rand({d.batch, d.out}, dt);
        Tensor y = Tensor::empty({d.batch, d.out}, dt), dw = Tensor::empty({d.out, d.in}, dt);
        Tensor db = Tensor::empty({d.out}, dt);
        Tensor bias = b;
        MLAI_DISPATCH_FLOAT(dt, "test", {
          k::cpu::gemm_epilogue<scalar_t>(
              false, true, d.batch, d.out, d.in, x.data<scalar_t>(), d.in, w.data<scalar_t>(),
              d.in, y.data<scalar_t>(), d.out,
              relu_on ? k::Epilogue::kBiasRelu : k::Epilogue::kBias, bias.data<scalar_t>());
          k::cpu::gemm_epilogue<scalar_t>(true, false, d.out, d.in, d.batch,
                                          gz.data<scalar_t>(), d.out, x.data<scalar_t>(), d.in,
                                          dw.data<scalar_t>(), d.in, k::Epilogue::kRowSumA,
                                          db.data<scalar_t>());
        });
        EXPECT_EQ(max_rel_error(y, linear_forward(x, w, b, relu_on)), 0.0);
        const auto [cdw, cdb] = linear_weight_grad(gz, x, true);
        EXPECT_EQ(max_rel_error(dw, cdw), 0.0);
        EXPECT_EQ(max_rel_error(db, cdb), 0.0);
      }
}

TEST_F(LinearOps, CpuIsGemmThenBiasActAndColumnSums) {
  for (const Dims& d : kDims)
    for (bool relu_on : {false, true}) {
      SCOPED_TRACE(d.str() + (relu_on ? " relu" : ""));
      const Tensor x = rand({d.batch, d.in}, DType::kFloat32);
      const Tensor w = rand({d.out, d.in}, DType::kFloat32), b = rand({d.out}, DType::kFloat32);
      const Tensor ref = bias_act(matmul(x, w, false, true), b, relu_on);
      EXPECT_LE(max_rel_error(linear_forward(x, w, b, relu_on), ref), 0.0);
      const Tensor gz = rand({d.batch, d.out}, DType::kFloat32);
      const auto [dw, db] = linear_weight_grad(gz, x, true);
      EXPECT_LE(max_rel_error(dw, matmul(gz, x, true, false)), 0.0);
      EXPECT_LE(max_rel_error(db, sum_dim(gz, 0)), 0.0);
      EXPECT_FALSE(linear_weight_grad(gz, x, false).second.defined());
    }
}

TEST_F(LinearOps, ShapeMismatchIsAClearError) {
  const Tensor x = rand({4, 3}, DType::kFloat32), w = rand({5, 2}, DType::kFloat32);
  try {
    linear_forward(x, w, Tensor(), false);
    FAIL() << "mismatched shapes were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("linear"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      linear_weight_grad(rand({4, 5}, DType::kFloat32), rand({3, 2}, DType::kFloat32), true),
      std::invalid_argument);
}

class LinearOpsCuda : public LinearOps {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  }
  void TearDown() override { set_gemm_epilogues(true); }
};

double tol(DType dt) {
  return dt == DType::kFloat32 ? 1e-5 : (dt == DType::kFloat16 ? 2e-3 : 1e-2);
}

TEST_F(LinearOpsCuda, EpiloguesMatchTheCpuAndTheFallback) {
  const Device gpu = Device::cuda(0);
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
    for (const Dims& d : kDims)
      for (bool relu_on : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + d.str() + (relu_on ? " relu" : ""));
        const Tensor x = rand({d.batch, d.in}, dt), w = rand({d.out, d.in}, dt);
        const Tensor b = rand({d.out}, dt), gz = rand({d.batch, d.out}, dt);
        const Tensor gx = x.to(gpu), gw = w.to(gpu), gb = b.to(gpu), ggz = gz.to(gpu);
        const int64_t fallbacks = gemm_epilogue_fallbacks();
        const Tensor y = linear_forward(gx, gw, gb, relu_on);
        // Bias and bias + relu epilogues exist for every type here: no silent fallback.
        EXPECT_EQ(gemm_epilogue_fallbacks(), fallbacks) << "cuBLASLt had no bias epilogue";
        // The CPU works in float: compare in float, bounded by the storage type's rounding.
        const Tensor ref = cast(linear_forward(cast(x, DType::kFloat32), cast(w, DType::kFloat32),
                                               cast(b, DType::kFloat32), relu_on),
                                dt);
        EXPECT_LE(
            max_rel_error(cast(y, DType::kFloat32).to(Device::cpu()), cast(ref, DType::kFloat32)),
            tol(dt));
        const auto [dw, db] = linear_weight_grad(ggz, gx, true);
        const auto [cdw, cdb] = linear_weight_grad(gz, x, true);
        EXPECT_LE(
            max_rel_error(cast(dw, DType::kFloat32).to(Device::cpu()), cast(cdw, DType::kFloat32)),
            tol(dt));
        EXPECT_LE(
            max_rel_error(cast(db, DType::kFloat32).to(Device::cpu()), cast(cdb, DType::kFloat32)),
            tol(dt));
        // The GPU's fallback (cuBLAS GEMM + bias_act / sum_dim) agrees too.
        set_gemm_epilogues(false);
        const Tensor y2 = linear_forward(gx, gw, gb, relu_on);
        const auto [dw2, db2] = linear_weight_grad(ggz, gx, true);
        set_gemm_epilogues(true);
        EXPECT_LE(max_rel_error(cast(y, DType::kFloat32), cast(y2, DType::kFloat32)), tol(dt));
        EXPECT_LE(max_rel_error(cast(db, DType::kFloat32), cast(db2, DType::kFloat32)), tol(dt));
        EXPECT_LE(max_rel_error(cast(dw, DType::kFloat32), cast(dw2, DType::kFloat32)), tol(dt));
      }
  RecordProperty("epilogue_fallbacks", std::to_string(gemm_epilogue_fallbacks()));
  std::printf("cuBLASLt epilogue fallbacks (bias-gradient GEMMs without an algorithm): %lld\n",
              static_cast<long long>(gemm_epilogue_fallbacks()));
}

}  // namespace
}  // namespace mlai::tensor
