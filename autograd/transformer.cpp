// The Vision Transformer's ops and their backwards (tensor/transformer_ops.h).
#include "autograd/ops.h"
#include "tensor/transformer_ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
struct LayerNormNode : Node {
  Tensor x, gamma, mean, rstd;
  std::vector<Tensor> backward(const Tensor& g) override {
    const bool params = inputs.size() > 1 && (inputs[1] || inputs[2]);
    t::LayerNormGrads d = t::layer_norm_backward(x, g, gamma, mean, rstd, params);
    if (inputs.size() == 1) return {inputs[0] ? d.dx : Tensor()};
    return {inputs[0] ? d.dx : Tensor(), inputs[1] ? d.dgamma : Tensor(),
            inputs[2] ? d.dbeta : Tensor()};
  }
  const char* name() const override { return "LayerNormBackward"; }
};

struct GeluNode : Node {
  Tensor x;
  std::vector<Tensor> backward(const Tensor& g) override { return {t::gelu_backward(g, x)}; }
  const char* name() const override { return "GeluBackward"; }
};

struct SelfAttentionNode : Node {
  Tensor qkv, probs;
  int64_t heads = 1;
  std::vector<Tensor> backward(const Tensor& g) override {
    const int64_t n = qkv.size(0), tk = qkv.size(1), e = qkv.size(2) / 3;
    add_flops(4 * 2 * n * tk * tk * e);  // dv, dprobs, dq, dk
    return {t::self_attention_backward(g, qkv, probs, heads)};
  }
  const char* name() const override { return "SelfAttentionBackward"; }
};

struct EmbedTokensNode : Node {
  std::vector<Tensor> backward(const Tensor& g) override {
    t::EmbedGrads d = t::embed_tokens_backward(g);
    return {inputs[0] ? d.dpatches : Tensor(), inputs[1] ? d.dcls : Tensor(),
            inputs[2] ? d.dpos : Tensor()};
  }
  const char* name() const override { return "EmbedTokensBackward"; }
};

struct SelectTokenNode : Node {
  int64_t tokens = 0, index = 0;
  std::vector<Tensor> backward(const Tensor& g) override {
    return {t::select_token_backward(g, tokens, index)};
  }
  const char* name() const override { return "SelectTokenBackward"; }
};
}  // namespace

Variable layer_norm(const Variable& x, const Variable& gamma, const Variable& beta, double eps) {
  t::LayerNormOut o = t::layer_norm(x.data(), gamma.defined() ? gamma.data() : Tensor(),
                                    beta.defined() ? beta.data() : Tensor(), eps);
  const bool affine = gamma.defined();
  std::vector<const Variable*> in = affine ? std::vector<const Variable*>{&x, &gamma, &beta}
                                           : std::vector<const Variable*>{&x};
  std::shared_ptr<LayerNormNode> node;
  if (needs_grad(in)) {
    node = std::make_shared<LayerNormNode>();
    node->x = x.data();
    if (affine) node->gamma = gamma.data();
    node->mean = o.mean;
    node->rstd = o.rstd;
  }
  return make_result(o.y, node, in);
}

Variable gelu(const Variable& x) {
  std::shared_ptr<GeluNode> node;
  if (needs_grad({&x})) {
    node = std::make_shared<GeluNode>();
    node->x = x.data();
  }
  return make_result(t::gelu(x.data()), node, {&x});
}

Variable self_attention(const Variable& qkv, int64_t heads) {
  auto [out, probs] = t::self_attention(qkv.data(), heads);
  const int64_t n = qkv.data().size(0), tk = qkv.data().size(1), e = qkv.data().size(2) / 3;
  add_flops(2 * 2 * n * tk * tk * e);  // q k^T and probs v
  std::shared_ptr<SelfAttentionNode> node;
  if (needs_grad({&qkv})) {
    node = std::make_shared<SelfAttentionNode>();
    node->qkv = qkv.data();
    node->probs = probs;
    node->heads = heads;
  }
  return make_result(out, node, {&qkv});
}

Variable embed_tokens(const Variable& patches, const Variable& cls, const Variable& pos) {
  return make_result(t::embed_tokens(patches.data(), cls.data(), pos.data()),
                     std::make_shared<EmbedTokensNode>(), {&patches, &cls, &pos});
}

Variable select_token(const Variable& x, int64_t index) {
  auto node = std::make_shared<SelectTokenNode>();
  node->tokens = x.data().size(1);
  node->index = index;
  return make_result(t::select_token(x.data(), index), node, {&x});
}

}  // namespace mlai::autograd
