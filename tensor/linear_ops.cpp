// See linear_ops.h. The cuBLASLt path needs a workspace: a block from the caching allocator on
// the current stream, returned as soon as the call is enqueued (stream order protects it).
#include "tensor/linear_ops.h"

#include <atomic>
#include <stdexcept>
#include <string>

#include "tensor/ops.h"
#ifdef MLAI_WITH_CUDA
#include "kernels/gemm.h"
#include "tensor/handles.h"
#endif

namespace mlai::tensor {

namespace k = mlai::kernels;

namespace {
std::atomic<bool> g_epilogues{true};
std::atomic<int64_t> g_fallbacks{0};

// Enough for the split-K kernels cuBLASLt picks for small fully-connected layers.
constexpr int64_t kWorkspaceBytes = int64_t{8} << 20;

#ifdef MLAI_WITH_CUDA
// One cuBLASLt GEMM with an epilogue on x's device; false when it has no algorithm for it.
bool try_epilogue(bool ta, bool tb, const Tensor& a, const Tensor& b, Tensor& c, k::Epilogue ep,
                  Tensor& vec) {
  if (!a.device().is_cuda() || !g_epilogues.load() || a.dtype() == DType::kFloat64) return false;
  const int64_t m = c.size(0), n = c.size(1), kk = ta ? a.size(0) : a.size(1);
  Tensor ws = Tensor::empty({kWorkspaceBytes}, DType::kUInt8, a.device());
  bool ok = false;
  MLAI_DISPATCH_TRAINING(a.dtype(), "linear", {
    ok = k::cuda::gemm_epilogue<scalar_t>(
        ta, tb, m, n, kk, a.data<scalar_t>(), a.size(1), b.data<scalar_t>(), b.size(1),
        c.data<scalar_t>(), n, ep, vec.data<scalar_t>(), cublaslt_handle(a.device().index),
        ws.data_ptr(), static_cast<size_t>(kWorkspaceBytes), current_stream(a.device()).handle());
  });
  if (!ok) ++g_fallbacks;
  return ok;
}
#endif

void check_linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  if (x.ndim() != 2 || w.ndim() != 2 || x.size(1) != w.size(1) ||
      (bias.defined() && (bias.ndim() != 1 || bias.size(0) != w.size(0))))
    throw std::invalid_argument("linear: input " + x.str() + ", weight " + w.str() +
                                (bias.defined() ? ", bias " + bias.str() : std::string()) +
                                " do not fit ([batch, in], [out, in], [out])");
  if (bias.defined() && (bias.dtype() != x.dtype() || bias.device() != x.device()))
    throw std::invalid_argument("linear: bias " + bias.str() + " differs from input " + x.str());
}
}  // namespace

Tensor linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, bool relu) {
  check_linear(x, w, bias);
#ifdef MLAI_WITH_CUDA
  if (bias.defined() && w.dtype() == x.dtype() && w.device() == x.device()) {
    Tensor y = Tensor::empty({x.size(0), w.size(0)}, x.dtype(), x.device());
    Tensor b = bias;
    if (try_epilogue(false, true, x, w, y, relu ? k::Epilogue::kBiasRelu : k::Epilogue::kBias, b))
      return y;
  }
#endif
  Tensor z = matmul(x, w, false, true);
  if (bias.defined()) return bias_act(z, bias, relu);
  return relu ? tensor::relu(z) : z;
}

std::pair<Tensor, Tensor> linear_weight_grad(const Tensor& gz, const Tensor& x, bool want_bias) {
  if (gz.ndim() != 2 || x.ndim() != 2 || gz.size(0) != x.size(0))
    throw std::invalid_argument("linear backward: gradient " + gz.str() + " and input " + x.str() +
                                " do not fit ([batch, out], [batch, in])");
#ifdef MLAI_WITH_CUDA
  if (want_bias && gz.dtype() == x.dtype() && gz.device() == x.device()) {
    Tensor dw = Tensor::empty({gz.size(1), x.size(1)}, gz.dtype(), gz.device());
    Tensor db = Tensor::empty({gz.size(1)}, gz.dtype(), gz.device());
    if (try_epilogue(true, false, gz, x, dw, k::Epilogue::kRowSumA, db)) return {dw, db};
  }
#endif
  Tensor dw = matmul(gz, x, true, false);
  return {dw, want_bias ? sum_dim(gz, 0) : Tensor()};
}

void set_gemm_epilogues(bool enabled) { g_epilogues.store(enabled); }
int64_t gemm_epilogue_fallbacks() { return g_fallbacks.load(); }

}  // namespace mlai::tensor
