// Transformer ops: validate, allocate, dispatch on dtype and device to kernels/transformer.h
// and the batched GEMM (current stream).
#include "tensor/transformer_ops.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/gemm.h"
#include "kernels/transformer.h"
#include "tensor/dispatch.h"
#include "tensor/handles.h"
#include "tensor/nn_checks.h"
#include "tensor/ops.h"

namespace mlai::tensor {

namespace {
void check_on(const char* op, const Tensor& x, const Tensor& t, const char* what) {
  if (!t.defined()) throw std::invalid_argument(std::string(op) + ": " + what + " is undefined");
  if (t.device() != x.device())
    throw std::invalid_argument(std::string(op) + ": " + what + " on " + t.device().str() +
                                ", x on " + x.device().str());
}

// C_i = alpha op(A_i) op(B_i) + beta C_i for `batch` products at the given element strides.
template <class T>
void batched(const Device& dev, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
             const T* a, int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb,
             double beta, T* c, int64_t ldc, int64_t sc, int64_t batch) {
  if (dev.is_cuda()) {
#ifdef MLAI_WITH_CUDA
    k::cuda::gemm_batched<T>(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc,
                             batch, cublas_handle(dev.index), cublas_workspace(dev.index),
                             current_stream(dev).handle());
#endif
  } else {
    k::cpu::gemm_batched<T>(ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc,
                            batch);
  }
}
}  // namespace

LayerNormOut layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  if (!x.defined() || x.ndim() < 1) throw std::invalid_argument("layer_norm: x is undefined");
  const int64_t c = x.size(x.ndim() - 1), rows = c == 0 ? 0 : x.numel() / c;
  const DType pdt = detail::param_dtype(x.dtype());
  if (gamma.defined() != beta.defined())
    throw std::invalid_argument("layer_norm: gamma and beta must both be given or both not");
  for (const Tensor* p : {&gamma, &beta}) {
    if (!p->defined()) continue;
    check_on("layer_norm", x, *p, "gamma/beta");
    detail::check_dtype("layer_norm", "gamma/beta", *p, pdt);
    if (p->numel() != c)
      throw std::invalid_argument("layer_norm: gamma/beta " + shape_str(p->shape()) +
                                  " for x " + shape_str(x.shape()) + " (expected " +
                                  std::to_string(c) + " elements)");
  }
  LayerNormOut o{Tensor::empty(x.shape(), x.dtype(), x.device()),
                 Tensor::empty({rows}, pdt, x.device()), Tensor::empty({rows}, pdt, x.device())};
  MLAI_DISPATCH_FLOAT(x.dtype(), "layer_norm", {
    using A = k::acc_t<scalar_t>;
    MLAI_CALL(x.device(), layer_norm_forward<scalar_t>, x.data<scalar_t>(),
              gamma.defined() ? gamma.data<A>() : nullptr,
              beta.defined() ? beta.data<A>() : nullptr, o.y.data<scalar_t>(), o.mean.data<A>(),
              o.rstd.data<A>(), rows, c, eps);
  });
  return o;
}

LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                   const Tensor& mean, const Tensor& rstd, bool want_params) {
  check_on("layer_norm_backward", x, dy, "dy");
  detail::check_dtype("layer_norm_backward", "dy", dy, x.dtype());
  if (dy.shape() != x.shape())
    throw std::invalid_argument("layer_norm_backward: dy " + shape_str(dy.shape()) + " for x " +
                                shape_str(x.shape()));
  const int64_t c = x.size(x.ndim() - 1), rows = c == 0 ? 0 : x.numel() / c;
  const DType pdt = detail::param_dtype(x.dtype());
  check_on("layer_norm_backward", x, mean, "mean");
  check_on("layer_norm_backward", x, rstd, "rstd");
  if (mean.numel() != rows || rstd.numel() != rows)
    throw std::invalid_argument("layer_norm_backward: saved statistics do not match x " +
                                shape_str(x.shape()));
  LayerNormGrads g;
  g.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (want_params) {
    g.dgamma = Tensor::empty({c}, pdt, x.device());
    g.dbeta = Tensor::empty({c}, pdt, x.device());
  }
  MLAI_DISPATCH_FLOAT(x.dtype(), "layer_norm_backward", {
    using A = k::acc_t<scalar_t>;
    MLAI_CALL(x.device(), layer_norm_backward<scalar_t>, x.data<scalar_t>(),
              dy.data<scalar_t>(), gamma.defined() ? gamma.data<A>() : nullptr, mean.data<A>(),
              rstd.data<A>(), g.dx.data<scalar_t>(), want_params ? g.dgamma.data<A>() : nullptr,
              want_params ? g.dbeta.data<A>() : nullptr, rows, c);
  });
  return g;
}

Tensor gelu(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "gelu",
                      MLAI_CALL(x.device(), gelu<scalar_t>, x.data<scalar_t>(),
                                y.data<scalar_t>(), x.numel()));
  return y;
}

Tensor gelu_backward(const Tensor& dy, const Tensor& x) {
  check_on("gelu_backward", x, dy, "dy");
  detail::check_dtype("gelu_backward", "dy", dy, x.dtype());
  if (dy.shape() != x.shape())
    throw std::invalid_argument("gelu_backward: dy " + shape_str(dy.shape()) + " for x " +
                                shape_str(x.shape()));
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "gelu_backward",
                      MLAI_CALL(x.device(), gelu_backward<scalar_t>, dy.data<scalar_t>(),
                                x.data<scalar_t>(), dx.data<scalar_t>(), x.numel()));
  return dx;
}

namespace {
struct AttnDims {
  int64_t n, t, e, d;
};
AttnDims attention_dims(const char* op, const Tensor& qkv, int64_t heads) {
  if (!qkv.defined() || qkv.ndim() != 3 || qkv.size(2) % 3 != 0)
    throw std::invalid_argument(std::string(op) + ": expected qkv [n, t, 3 e], got " +
                                (qkv.defined() ? shape_str(qkv.shape()) : "undefined"));
  const int64_t e = qkv.size(2) / 3;
  if (heads < 1 || e % heads != 0)
    throw std::invalid_argument(std::string(op) + ": embedding width " + std::to_string(e) +
                                " is not a multiple of " + std::to_string(heads) + " heads");
  return {qkv.size(0), qkv.size(1), e, e / heads};
}
}  // namespace

std::pair<Tensor, Tensor> self_attention(const Tensor& qkv, int64_t heads) {
  const auto [n, t, e, d] = attention_dims("self_attention", qkv, heads);
  Tensor out = Tensor::empty({n, t, e}, qkv.dtype(), qkv.device());
  Tensor probs = Tensor::empty({n, heads, t, t}, qkv.dtype(), qkv.device());
  const Device& dev = qkv.device();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  MLAI_DISPATCH_FLOAT(qkv.dtype(), "self_attention", {
    const scalar_t* q = qkv.data<scalar_t>();
    scalar_t* p = probs.data<scalar_t>();
    scalar_t* o = out.data<scalar_t>();
    const int64_t ld = 3 * e, s_qkv = t * 3 * e, s_p = heads * t * t;
    for (int64_t h = 0; h < heads; ++h) {
      // scores = q_h k_h^T / sqrt(d), then the rows' softmax (below, all heads at once)
      batched<scalar_t>(dev, false, true, t, t, d, scale, q + h * d, ld, s_qkv, q + e + h * d, ld,
                        s_qkv, 0.0, p + h * t * t, t, s_p, n);
    }
    MLAI_CALL(dev, softmax_rows<scalar_t>, p, p, n * heads * t, t);
    for (int64_t h = 0; h < heads; ++h)  // out_h = probs_h v_h
      batched<scalar_t>(dev, false, false, t, d, t, 1.0, p + h * t * t, t, s_p,
                        q + 2 * e + h * d, ld, s_qkv, 0.0, o + h * d, e, t * e, n);
  });
  return {out, probs};
}

Tensor self_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                               int64_t heads) {
  const auto [n, t, e, d] = attention_dims("self_attention_backward", qkv, heads);
  check_on("self_attention_backward", qkv, dout, "dout");
  check_on("self_attention_backward", qkv, probs, "probs");
  detail::check_dtype("self_attention_backward", "dout", dout, qkv.dtype());
  detail::check_dtype("self_attention_backward", "probs", probs, qkv.dtype());
  if (dout.shape() != Shape{n, t, e} || probs.shape() != Shape{n, heads, t, t})
    throw std::invalid_argument("self_attention_backward: dout " + shape_str(dout.shape()) +
                                " and probs " + shape_str(probs.shape()) + " for qkv " +
                                shape_str(qkv.shape()));
  Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
  Tensor ds = Tensor::empty(probs.shape(), probs.dtype(), probs.device());
  const Device& dev = qkv.device();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  MLAI_DISPATCH_FLOAT(qkv.dtype(), "self_attention_backward", {
    const scalar_t* q = qkv.data<scalar_t>();
    const scalar_t* p = probs.data<scalar_t>();
    const scalar_t* go = dout.data<scalar_t>();
    scalar_t* g = dqkv.data<scalar_t>();
    scalar_t* gs = ds.data<scalar_t>();
    const int64_t ld = 3 * e, s_qkv = t * 3 * e, s_p = heads * t * t, s_o = t * e;
    for (int64_t h = 0; h < heads; ++h) {
      // dv_h = probs_h^T dout_h; dprobs_h = dout_h v_h^T
      batched<scalar_t>(dev, true, false, t, d, t, 1.0, p + h * t * t, t, s_p, go + h * d, e,
                        s_o, 0.0, g + 2 * e + h * d, ld, s_qkv, n);
      batched<scalar_t>(dev, false, true, t, t, d, 1.0, go + h * d, e, s_o, q + 2 * e + h * d,
                        ld, s_qkv, 0.0, gs + h * t * t, t, s_p, n);
    }
    // through the softmax, and the 1/sqrt(d) of the scores
    MLAI_CALL(dev, softmax_rows_backward<scalar_t>, p, gs, gs, n * heads * t, t, scale);
    for (int64_t h = 0; h < heads; ++h) {
      // dq_h = dscores_h k_h; dk_h = dscores_h^T q_h
      batched<scalar_t>(dev, false, false, t, d, t, 1.0, gs + h * t * t, t, s_p, q + e + h * d,
                        ld, s_qkv, 0.0, g + h * d, ld, s_qkv, n);
      batched<scalar_t>(dev, true, false, t, d, t, 1.0, gs + h * t * t, t, s_p, q + h * d, ld,
                        s_qkv, 0.0, g + e + h * d, ld, s_qkv, n);
    }
  });
  return dqkv;
}

Tensor embed_tokens(const Tensor& patches, const Tensor& cls, const Tensor& pos) {
  if (!patches.defined() || patches.ndim() != 3)
    throw std::invalid_argument("embed_tokens: expected patches [n, p, e]");
  const int64_t n = patches.size(0), p = patches.size(1), e = patches.size(2);
  check_on("embed_tokens", patches, cls, "the class token");
  check_on("embed_tokens", patches, pos, "the position embedding");
  detail::check_dtype("embed_tokens", "the class token", cls, patches.dtype());
  detail::check_dtype("embed_tokens", "the position embedding", pos, patches.dtype());
  if (cls.numel() != e || pos.numel() != (p + 1) * e)
    throw std::invalid_argument("embed_tokens: class token " + shape_str(cls.shape()) +
                                " and positions " + shape_str(pos.shape()) + " for patches " +
                                shape_str(patches.shape()) + " (expected [1, 1, " +
                                std::to_string(e) + "] and [1, " + std::to_string(p + 1) + ", " +
                                std::to_string(e) + "])");
  Tensor out = Tensor::empty({n, p + 1, e}, patches.dtype(), patches.device());
  MLAI_DISPATCH_FLOAT(patches.dtype(), "embed_tokens",
                      MLAI_CALL(patches.device(), embed_tokens<scalar_t>,
                                patches.data<scalar_t>(), cls.data<scalar_t>(),
                                pos.data<scalar_t>(), out.data<scalar_t>(), n, p, e));
  return out;
}

EmbedGrads embed_tokens_backward(const Tensor& dout) {
  const int64_t n = dout.size(0), t = dout.size(1), e = dout.size(2);
  EmbedGrads g;
  g.dpos = sum_dim(dout, 0, true);  // [1, t, e]
  g.dcls = Tensor::empty({1, 1, e}, dout.dtype(), dout.device());
  g.dpatches = Tensor::empty({n, t - 1, e}, dout.dtype(), dout.device());
  MLAI_DISPATCH_FLOAT(dout.dtype(), "embed_tokens_backward", {
    // the class token's gradient is position 0's
    MLAI_CALL(dout.device(), copy_tokens<scalar_t>, g.dpos.data<scalar_t>(), t, 0,
              g.dcls.data<scalar_t>(), 1, 0, 1, 1, e);
    MLAI_CALL(dout.device(), copy_tokens<scalar_t>, dout.data<scalar_t>(), t, 1,
              g.dpatches.data<scalar_t>(), t - 1, 0, t - 1, n, e);
  });
  return g;
}

Tensor select_token(const Tensor& x, int64_t index) {
  if (!x.defined() || x.ndim() != 3 || index < 0 || index >= x.size(1))
    throw std::invalid_argument("select_token: token " + std::to_string(index) + " of " +
                                (x.defined() ? shape_str(x.shape()) : "undefined") +
                                " (expected [n, t, e])");
  const int64_t n = x.size(0), t = x.size(1), e = x.size(2);
  Tensor y = Tensor::empty({n, e}, x.dtype(), x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "select_token",
                      MLAI_CALL(x.device(), copy_tokens<scalar_t>, x.data<scalar_t>(), t, index,
                                y.data<scalar_t>(), 1, 0, 1, n, e));
  return y;
}

Tensor select_token_backward(const Tensor& dy, int64_t tokens, int64_t index) {
  const int64_t n = dy.size(0), e = dy.size(1);
  Tensor dx = Tensor::zeros({n, tokens, e}, dy.dtype(), dy.device());
  MLAI_DISPATCH_FLOAT(dy.dtype(), "select_token_backward",
                      MLAI_CALL(dy.device(), copy_tokens<scalar_t>, dy.data<scalar_t>(), 1, 0,
                                dx.data<scalar_t>(), tokens, index, 1, n, e));
  return dx;
}

}  // namespace mlai::tensor
