// MobileNetV2 (Sandler et al., 2018) exactly as torchvision builds it (width 1.0): a 3x3/2 stem
// of 32 filters, 17 inverted residual blocks, a 1x1 conv to 1280, global average pool, dropout
// and a linear classifier. A block expands its input t times with a 1x1 conv (not when t = 1),
// filters each channel with a depthwise 3x3 conv (the block's stride), and projects back with a
// linear 1x1 conv; batch norm after each conv, ReLU6 after the first two, and the input added
// where the stride is 1 and the widths agree. Init: kaiming-normal fan_out convs, batch norm
// 1/0, classifier N(0, 0.01) with zero bias. torchvision's names ("features.2.conv.1.0.weight",
// "classifier.1.bias"): 3,504,872 parameters for 1000 classes.
//
// mobilenet_v2_cifar is the usual change for 32x32 images (as in kuangliu/pytorch-cifar): the
// stem and the first 24-wide block at stride 1, so the last features are 4x4 rather than 1x1.
// Same layers, names and parameter count.
//
// --dropout sets the classifier's dropout (torchvision's 0.2 when not given; bin/ sets it).
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {

// torchvision's Conv2dNormActivation: conv (no bias), batch norm, ReLU6, named 0, 1, 2
// (Sequential runs the batch norm and the ReLU6 as one fused op).
std::shared_ptr<Sequential> conv_bn_relu6(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                          int64_t groups, Generator& gen) {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Conv2d>(in, out, kernel, stride, (kernel - 1) / 2, gen, false, groups));
  s->add(std::make_shared<BatchNorm2d>(out));
  s->add(std::make_shared<ReLU6>());
  return s;
}

// A block's layers, torchvision's `conv` Sequential: [expand,] depthwise, projection conv and
// its batch norm, which adds the block's input in the same pass where the block has a
// residual (BatchNorm2d::forward_act with no activation).
class BlockLayers : public Sequential {
 public:
  explicit BlockLayers(bool residual) : residual_(residual) {}
  Variable forward(const Variable& x) override {
    const auto& ch = children();
    Variable h = x;
    for (size_t i = 0; i + 1 < ch.size(); ++i) h = (*ch[i].second)(h);
    auto& bn = static_cast<BatchNorm2d&>(*ch.back().second);
    return bn.forward_act(h, residual_ ? x : Variable(), false);
  }

 private:
  bool residual_;
};

class InvertedResidual : public Module {
 public:
  InvertedResidual(int64_t in, int64_t out, int64_t stride, int64_t expand, Generator& gen) {
    const int64_t hidden = in * expand;
    auto conv = std::make_shared<BlockLayers>(stride == 1 && in == out);
    if (expand != 1) conv->add(conv_bn_relu6(in, hidden, 1, 1, 1, gen));
    conv->add(conv_bn_relu6(hidden, hidden, 3, stride, hidden, gen));  // depthwise
    conv->add(std::make_shared<Conv2d>(hidden, out, 1, 1, 0, gen));
    conv->add(std::make_shared<BatchNorm2d>(out));
    conv_ = register_module("conv", conv);
  }
  Variable forward(const Variable& x) override { return (*conv_)(x); }
  std::string type_name() const override { return "InvertedResidual"; }

 private:
  std::shared_ptr<Module> conv_;
};

class MobileNetV2 : public Module {
 public:
  MobileNetV2(const ModelSpec& s, bool small_images) {
    Generator gen(s.seed);
    // (expansion t, width c, blocks n, stride s of the first), the paper's Table 2.
    struct Stage {
      int64_t t, c, n, s;
    };
    const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                            {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    auto features = std::make_shared<Sequential>();
    int64_t in = 32;
    features->add(conv_bn_relu6(s.channels, in, 3, small_images ? 1 : 2, 1, gen));
    for (const Stage& st : stages)
      for (int64_t b = 0; b < st.n; ++b) {
        int64_t stride = b == 0 ? st.s : 1;
        if (small_images && st.c == 24) stride = 1;
        features->add(std::make_shared<InvertedResidual>(in, st.c, stride, st.t, gen));
        in = st.c;
      }
    features->add(conv_bn_relu6(in, kLastWidth, 1, 1, 1, gen));
    features_ = register_module("features", features);
    avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool>());
    auto classifier = std::make_shared<Sequential>();
    classifier->add(std::make_shared<Dropout>(s.dropout, s.seed * 7919 + 1));
    auto fc = std::make_shared<Linear>(kLastWidth, s.num_classes, gen);
    for (auto& [name, p] : fc->named_parameters())
      p.data().copy_from(name == "weight" ? Tensor::normal(p.shape(), 0.0, 0.01, gen)
                                          : Tensor::zeros(p.shape()));
    classifier->add(fc);
    classifier_ = register_module("classifier", classifier);
  }
  Variable forward(const Variable& x) override {
    return (*classifier_)((*avgpool_)((*features_)(x)));
  }
  std::string type_name() const override { return "MobileNetV2"; }

 private:
  static constexpr int64_t kLastWidth = 1280;
  std::shared_ptr<Module> features_, avgpool_, classifier_;
};

const bool kRegistered = [] {
  register_model("mobilenet_v2", [](const ModelSpec& s) -> std::shared_ptr<Module> {
    return std::make_shared<MobileNetV2>(s, false);
  });
  register_model("mobilenet_v2_cifar", [](const ModelSpec& s) -> std::shared_ptr<Module> {
    return std::make_shared<MobileNetV2>(s, true);
  });
  return true;
}();

}  // namespace

}  // namespace mlai::nn
