// Gradient checks (float64, CPU, finite differences) for the Vision Transformer's ops: layer
// norm with and without its affine parameters, GELU, multi-head self-attention (one head,
// several, a token count that is no multiple of anything), the token embedding, picking the
// class token, and a whole pre-norm encoder block built from them.
#include <gtest/gtest.h>

#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

class TransformerGradcheck : public ::testing::Test {
 protected:
  tensor::Generator gen{17};
  Tensor rand(const Shape& s) { return Tensor::uniform(s, -1.0, 1.0, gen, DType::kFloat64); }
  void expect_ok(const GradcheckFn& f, const std::vector<Tensor>& in) {
    const GradcheckResult r = gradcheck(f, in);
    EXPECT_TRUE(r.ok) << r.message;
  }
};

TEST_F(TransformerGradcheck, LayerNorm) {
  for (const Shape& s : {Shape{3, 5}, Shape{2, 3, 7}, Shape{1, 1}, Shape{4, 16}}) {
    const int64_t c = s.back();
    expect_ok([](auto& v) { return layer_norm(v[0], v[1], v[2], 1e-6); },
              {rand(s), rand({c}), rand({c})});
    expect_ok([](auto& v) { return layer_norm(v[0], Variable(), Variable(), 1e-5); }, {rand(s)});
  }
}

TEST_F(TransformerGradcheck, Gelu) {
  // Values spread over [-4, 4], where the curve bends and flattens.
  Tensor x = tensor::scale(rand({5, 9}), 4.0);
  expect_ok([](auto& v) { return gelu(v[0]); }, {x});
}

TEST_F(TransformerGradcheck, SelfAttention) {
  struct G {
    int64_t n, t, e, heads;
  };
  for (const G& g : {G{2, 3, 4, 1}, G{2, 5, 6, 2}, G{1, 7, 12, 3}, G{3, 2, 8, 4}}) {
    // Scaled up so the softmax is far from uniform.
    Tensor qkv = tensor::scale(rand({g.n, g.t, 3 * g.e}), 2.0);
    expect_ok([&](auto& v) { return self_attention(v[0], g.heads); }, {qkv});
  }
}

TEST_F(TransformerGradcheck, EmbedAndSelectTokens) {
  expect_ok([](auto& v) { return embed_tokens(v[0], v[1], v[2]); },
            {rand({3, 4, 5}), rand({1, 1, 5}), rand({1, 5, 5})});
  expect_ok([](auto& v) { return select_token(v[0], 0); }, {rand({3, 4, 5})});
  expect_ok([](auto& v) { return select_token(v[0], 3); }, {rand({2, 4, 3})});
}

// torchvision's EncoderBlock: x + attn(ln_1(x)), then + mlp(ln_2(.)), the products through
// linear on [n t, e] rows, every parameter checked with the input.
TEST_F(TransformerGradcheck, EncoderBlock) {
  const int64_t n = 2, tk = 3, e = 4, heads = 2, m = 6;
  auto block = [&](const std::vector<Variable>& v) {
    const Variable& x = v[0];
    Variable h = layer_norm(x, v[1], v[2], 1e-6);
    Variable qkv = reshape(linear(reshape(h, {n * tk, e}), v[3], v[4]), {n, tk, 3 * e});
    Variable a = linear(reshape(self_attention(qkv, heads), {n * tk, e}), v[5], v[6]);
    Variable x1 = add(x, reshape(a, {n, tk, e}));
    Variable h2 = reshape(layer_norm(x1, v[7], v[8], 1e-6), {n * tk, e});
    Variable y = linear(gelu(linear(h2, v[9], v[10])), v[11], v[12]);
    return add(x1, reshape(y, {n, tk, e}));
  };
  expect_ok(block, {rand({n, tk, e}), rand({e}), rand({e}), rand({3 * e, e}), rand({3 * e}),
                    rand({e, e}), rand({e}), rand({e}), rand({e}), rand({m, e}), rand({m}),
                    rand({e, m}), rand({e})});
}

}  // namespace
}  // namespace mlai::autograd
