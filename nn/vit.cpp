// Vision Transformers (Dosovitskiy et al., 2021) exactly as torchvision's VisionTransformer
// builds them: the image cut into patches by a convolution of the patch's size and stride
// (conv_proj), a learned class token in front, learned position embeddings added
// (encoder.pos_embedding, N(0, 0.02)), pre-norm encoder blocks (x + attention(ln_1(x)), then
// + mlp(ln_2(x)); layer norm eps 1e-6; the MLP Linear, GELU, Dropout, Linear, Dropout), a
// final layer norm and a linear head on the class token. torchvision's names
// ("encoder.layers.encoder_layer_0.self_attention.in_proj_weight", "heads.head.bias") and init:
// the patch convolution N(0, 1/fan_in) (torchvision truncates at +-2, 14 standard deviations
// out), attention's packed in_proj Xavier-uniform with zero biases, the MLP's linears
// Xavier-uniform with N(0, 1e-6) biases, and a zero head.
//
//   vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14: torchvision's sizes (86.6 M parameters
//     for vit_b_16 at 224x224 and 1000 classes); the image size is the data's (a multiple of
//     the patch), so the position embeddings are as many as its patches + 1.
//   vit_cifar: the small ViT of the Lightning tutorials for CIFAR-10 (UvA's "Vision
//     Transformers"): patches of 4, 6 blocks of 8 heads, width 256, MLP 512 (3.2 M parameters
//     at 32x32; 65 tokens).
// --dropout is torchvision's `dropout` (after the position embeddings, attention and in the
// MLP; 0 by default); attention's own dropout is 0, as torchvision's default.
#include <cmath>
#include <stdexcept>
#include <string>

#include "autograd/ops.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {

constexpr double kLnEps = 1e-6;  // torchvision's partial(nn.LayerNorm, eps=1e-6)

Tensor xavier_uniform(int64_t out, int64_t in, Generator& gen) {
  const double a = std::sqrt(6.0 / static_cast<double>(in + out));
  return Tensor::uniform({out, in}, -a, a, gen);
}

// torch.nn.MultiheadAttention(e, heads, batch_first=True) used as self-attention: q, k and v
// from one packed projection (in_proj_weight [3 e, e], in_proj_bias), the heads' outputs
// side by side through out_proj. Takes and returns [n, t, e].
class SelfAttention : public Module {
 public:
  SelfAttention(int64_t e, int64_t heads, Generator& gen) : e_(e), heads_(heads) {
    in_w_ = register_parameter("in_proj_weight", xavier_uniform(3 * e, e, gen));
    in_b_ = register_parameter("in_proj_bias", Tensor::zeros({3 * e}));
    out_proj_ = register_module("out_proj", std::make_shared<Linear>(e, e, gen));
    for (auto& [name, p] : out_proj_->named_parameters())
      if (name == "bias") p.data().copy_from(Tensor::zeros(p.shape()));
  }
  Variable forward(const Variable& x) override {
    const int64_t n = x.size(0), t = x.size(1);
    Variable qkv = autograd::linear(autograd::reshape(x, {n * t, e_}), use(in_w_), use(in_b_));
    Variable a = autograd::self_attention(autograd::reshape(qkv, {n, t, 3 * e_}), heads_);
    return autograd::reshape((*out_proj_)(autograd::reshape(a, {n * t, e_})), {n, t, e_});
  }
  std::string type_name() const override { return "MultiheadAttention"; }

 private:
  int64_t e_, heads_;
  Variable in_w_, in_b_;
  std::shared_ptr<Module> out_proj_;
};

// torchvision's EncoderBlock.
class EncoderBlock : public Module {
 public:
  EncoderBlock(int64_t e, int64_t heads, int64_t mlp, double dropout, uint64_t seed,
               Generator& gen)
      : e_(e) {
    ln_1_ = register_module("ln_1", std::make_shared<LayerNorm>(e, kLnEps));
    attn_ = register_module("self_attention", std::make_shared<SelfAttention>(e, heads, gen));
    dropout_ = register_module("dropout", std::make_shared<Dropout>(dropout, seed));
    ln_2_ = register_module("ln_2", std::make_shared<LayerNorm>(e, kLnEps));
    auto m = std::make_shared<Sequential>();  // torchvision's MLPBlock: 0, 1, 2, 3, 4
    m->add(std::make_shared<Linear>(e, mlp, gen));
    m->add(std::make_shared<GELU>());
    m->add(std::make_shared<Dropout>(dropout, seed + 1));
    m->add(std::make_shared<Linear>(mlp, e, gen));
    m->add(std::make_shared<Dropout>(dropout, seed + 2));
    for (auto& [name, p] : m->named_parameters())
      p.data().copy_from(name.ends_with("weight")
                             ? xavier_uniform(p.size(0), p.size(1), gen)
                             : Tensor::normal(p.shape(), 0.0, 1e-6, gen));
    mlp_ = register_module("mlp", m);
  }
  Variable forward(const Variable& x) override {
    const int64_t n = x.size(0), t = x.size(1);
    Variable h = autograd::add((*dropout_)((*attn_)((*ln_1_)(x))), x);
    Variable y = (*mlp_)(autograd::reshape((*ln_2_)(h), {n * t, e_}));
    return autograd::add(h, autograd::reshape(y, {n, t, e_}));
  }
  std::string type_name() const override { return "EncoderBlock"; }

 private:
  int64_t e_;
  std::shared_ptr<Module> ln_1_, attn_, dropout_, ln_2_, mlp_;
};

// The blocks, named encoder_layer_0, encoder_layer_1, ... as torchvision's OrderedDict.
class EncoderLayers : public Module {
 public:
  void add(std::shared_ptr<Module> block) {
    register_module("encoder_layer_" + std::to_string(children().size()), std::move(block));
  }
  Variable forward(const Variable& x) override {
    Variable h = x;
    for (auto& [name, c] : children()) h = (*c)(h);
    return h;
  }
  std::string type_name() const override { return "Sequential"; }
};

struct VitSize {
  int64_t patch, layers, heads, hidden, mlp;
};

// torchvision's Encoder: position embeddings, dropout, the blocks, a final layer norm.
class Encoder : public Module {
 public:
  Encoder(int64_t tokens, const VitSize& v, double dropout, uint64_t seed, Generator& gen) {
    pos_ = register_parameter("pos_embedding",
                              Tensor::normal({1, tokens, v.hidden}, 0.0, 0.02, gen));
    dropout_ = register_module("dropout", std::make_shared<Dropout>(dropout, seed));
    auto layers = std::make_shared<EncoderLayers>();
    for (int64_t i = 0; i < v.layers; ++i)
      layers->add(std::make_shared<EncoderBlock>(v.hidden, v.heads, v.mlp, dropout,
                                                 seed + 3 * static_cast<uint64_t>(i + 1), gen));
    layers_ = register_module("layers", layers);
    ln_ = register_module("ln", std::make_shared<LayerNorm>(v.hidden, kLnEps));
  }
  // patches [n, p, e] and the class token [1, 1, e] -> the encoded tokens [n, p + 1, e]
  Variable encode(const Variable& patches, const Variable& cls) {
    Variable x = autograd::embed_tokens(patches, cls, use(pos_));
    return (*ln_)((*layers_)((*dropout_)(x)));
  }
  Variable forward(const Variable&) override {
    throw std::logic_error("Encoder: call encode(patches, class token)");
  }
  std::string type_name() const override { return "Encoder"; }

 private:
  Variable pos_;
  std::shared_ptr<Module> dropout_, layers_, ln_;
};

// torchvision's `heads`: an OrderedDict with one Linear, "head".
class Heads : public Module {
 public:
  Heads(int64_t hidden, int64_t classes, Generator& gen) {
    head_ = register_module("head", std::make_shared<Linear>(hidden, classes, gen));
    for (auto& [name, p] : head_->named_parameters()) p.data().copy_from(Tensor::zeros(p.shape()));
  }
  Variable forward(const Variable& x) override { return (*head_)(x); }
  std::string type_name() const override { return "Sequential"; }

 private:
  std::shared_ptr<Module> head_;
};

class VisionTransformer : public Module {
 public:
  VisionTransformer(const ModelSpec& s, const VitSize& v, const std::string& name)
      : hidden_(v.hidden) {
    if (s.height % v.patch != 0 || s.width % v.patch != 0)
      throw std::invalid_argument(
          "--arch " + name + ": the images are " + std::to_string(s.height) + "x" +
          std::to_string(s.width) + ", not a multiple of the patch size " +
          std::to_string(v.patch) + " (--image-size or another model)");
    if (v.hidden % v.heads != 0)
      throw std::invalid_argument("--arch " + name + ": width " + std::to_string(v.hidden) +
                                  " is not a multiple of " + std::to_string(v.heads) + " heads");
    Generator gen(s.seed);
    cls_ = register_parameter("class_token", Tensor::zeros({1, 1, v.hidden}));
    auto conv = std::make_shared<Conv2d>(s.channels, v.hidden, v.patch, v.patch, 0, gen, true);
    const double fan_in = static_cast<double>(s.channels * v.patch * v.patch);
    for (auto& [pname, p] : conv->named_parameters())
      p.data().copy_from(pname == "weight"
                             ? Tensor::normal(p.shape(), 0.0, std::sqrt(1.0 / fan_in), gen)
                             : Tensor::zeros(p.shape()));
    conv_proj_ = register_module("conv_proj", conv);
    const int64_t tokens = (s.height / v.patch) * (s.width / v.patch) + 1;
    encoder_ = register_module(
        "encoder", std::make_shared<Encoder>(tokens, v, s.dropout, s.seed * 7919 + 1, gen));
    heads_ = register_module("heads", std::make_shared<Heads>(v.hidden, s.num_classes, gen));
  }
  Variable forward(const Variable& x) override {
    Variable p = (*conv_proj_)(x);  // [n, h / patch, w / patch, e]: NHWC is patch-major already
    const int64_t n = p.size(0), patches = p.size(1) * p.size(2);
    Variable tokens = encoder_->encode(autograd::reshape(p, {n, patches, hidden_}), use(cls_));
    return (*heads_)(autograd::select_token(tokens, 0));
  }
  std::string type_name() const override { return "VisionTransformer"; }

 private:
  int64_t hidden_;
  Variable cls_;
  std::shared_ptr<Module> conv_proj_, heads_;
  std::shared_ptr<Encoder> encoder_;
};

const bool kRegistered = [] {
  const std::pair<const char*, VitSize> sizes[] = {
      {"vit_b_16", {16, 12, 12, 768, 3072}}, {"vit_b_32", {32, 12, 12, 768, 3072}},
      {"vit_l_16", {16, 24, 16, 1024, 4096}}, {"vit_l_32", {32, 24, 16, 1024, 4096}},
      {"vit_h_14", {14, 32, 16, 1280, 5120}}, {"vit_cifar", {4, 6, 8, 256, 512}}};
  for (const auto& [name, v] : sizes) {
    const std::string n = name;
    const VitSize size = v;
    register_model(n, [n, size](const ModelSpec& s) -> std::shared_ptr<Module> {
      return std::make_shared<VisionTransformer>(s, size, n);
    });
  }
  return true;
}();

}  // namespace

}  // namespace mlai::nn
