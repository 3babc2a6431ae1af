// ResNet-18 exactly as torchvision builds it (BasicBlock [2, 2, 2, 2], 7x7/2 stem, 3x3/2 max
// pool, 1x1 conv + BN downsample, global average pool, fc; kaiming-normal fan_out convs, BN
// weight 1 / bias 0, default Linear fc), with torchvision's parameter names, and the
// small-image variant resnet18_cifar (3x3/1 stem, no max pool). Input channels come from
// the data set.
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, Generator& gen) {
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, gen));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
    relu_ = register_module("relu", std::make_shared<ReLU>());
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, gen));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
    if (stride != 1 || in != out) {
      auto ds = std::make_shared<Sequential>();
      ds->add(std::make_shared<Conv2d>(in, out, 1, stride, 0, gen));
      ds->add(std::make_shared<BatchNorm2d>(out));
      downsample_ = register_module("downsample", ds);
    }
  }
  // bn1 + relu and bn2 + residual add + relu each run as one fused op.
  Variable forward(const Variable& x) override {
    const Variable out = bn1_->forward_act((*conv1_)(x), Variable(), true);
    const Variable identity = downsample_ ? (*downsample_)(x) : x;
    return bn2_->forward_act((*conv2_)(out), identity, true);
  }
  std::string type_name() const override { return "BasicBlock"; }

 private:
  std::shared_ptr<Module> conv1_, relu_, conv2_, downsample_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
};

class ResNet : public Module {
 public:
  ResNet(const ModelSpec& s, bool small_images) {
    Generator gen(s.seed);
    if (small_images) {
      conv1_ = register_module("conv1", std::make_shared<Conv2d>(s.channels, 64, 3, 1, 1, gen));
    } else {
      conv1_ = register_module("conv1", std::make_shared<Conv2d>(s.channels, 64, 7, 2, 3, gen));
    }
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(64));
    relu_ = register_module("relu", std::make_shared<ReLU>());  // fused into bn1; kept for names
    if (!small_images) maxpool_ = register_module("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));
    int64_t in = 64;
    const int64_t widths[4] = {64, 128, 256, 512};
    for (int l = 0; l < 4; ++l) {
      auto layer = std::make_shared<Sequential>();
      for (int b = 0; b < 2; ++b) {
        layer->add(std::make_shared<BasicBlock>(in, widths[l], (b == 0 && l > 0) ? 2 : 1, gen));
        in = widths[l];
      }
      layers_[l] = register_module("layer" + std::to_string(l + 1), layer);
    }
    avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool>());
    fc_ = register_module("fc", std::make_shared<Linear>(512, s.num_classes, gen));
  }
  Variable forward(const Variable& x) override {
    Variable h = bn1_->forward_act((*conv1_)(x), Variable(), true);
    if (maxpool_) h = (*maxpool_)(h);
    for (auto& l : layers_) h = (*l)(h);
    return (*fc_)((*avgpool_)(h));
  }
  std::string type_name() const override { return "ResNet"; }

 private:
  std::shared_ptr<Module> conv1_, relu_, maxpool_, avgpool_, fc_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Module> layers_[4];
};

std::shared_ptr<Module> make_resnet18(const ModelSpec& s) {
  return std::make_shared<ResNet>(s, false);
}
std::shared_ptr<Module> make_resnet18_cifar(const ModelSpec& s) {
  return std::make_shared<ResNet>(s, true);
}
}  // namespace

MLAI_REGISTER_MODEL("resnet18", make_resnet18);
MLAI_REGISTER_MODEL("resnet18_cifar", make_resnet18_cifar);

}  // namespace mlai::nn
