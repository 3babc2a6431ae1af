// ResNet-18, -34, -50, -101 and -152, Wide ResNet-50-2 and -101-2 and ResNeXt-50 32x4d, -101
// 32x8d and -101 64x4d exactly as torchvision builds them (BasicBlock [2, 2, 2, 2] and
// [3, 4, 6, 3]; Bottleneck [3, 4, 6, 3], [3, 4, 23, 3] and [3, 8, 36, 3] with the stride on its
// 3x3 conv, "ResNet v1.5", twice as wide inside in the wide ones, its 3x3 conv grouped in the
// ResNeXts; 7x7/2 stem, 3x3/2 max pool, 1x1 conv + BN downsample, global average pool, fc;
// kaiming-normal fan_out convs, BN weight 1 / bias 0, default Linear fc), with torchvision's
// parameter names, and their small-image variants *_cifar (3x3/1 stem, no max pool). Input channels
// come from the data set. Also He et al.'s CIFAR ResNets, resnet20 to resnet110 (see kCifar below),
// in the same building blocks and names.
#include <vector>

#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {
// torchvision's shortcut where a block changes the shape: a 1x1 conv with the stride, and BN.
std::shared_ptr<Sequential> downsample(int64_t in, int64_t out, int64_t stride, Generator& gen) {
  auto ds = std::make_shared<Sequential>();
  ds->add(std::make_shared<Conv2d>(in, out, 1, stride, 0, gen));
  ds->add(std::make_shared<BatchNorm2d>(out));
  return ds;
}

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride, Generator& gen) {
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, gen));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
    relu_ = register_module("relu", std::make_shared<ReLU>());
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, gen));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
    if (stride != 1 || in != out)
      downsample_ = register_module("downsample", downsample(in, out, stride, gen));
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

// torchvision's Bottleneck: 1x1 (in -> width), 3x3 with the stride (width -> width, in `groups`
// groups), 1x1 (width -> 4 planes), each with batch norm; relu after the first two and after the
// residual add. width is planes * width_per_group / 64 * groups: planes in ResNet-50, twice it
// in the wide ResNets (width_per_group 128), and 32 groups of 4 (2 planes) in ResNeXt-50 32x4d.
class Bottleneck : public Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in, int64_t planes, int64_t width, int64_t groups, int64_t stride,
             Generator& gen) {
    const int64_t out = planes * kExpansion;
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, width, 1, 1, 0, gen));
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(width));
    conv2_ = register_module(
        "conv2", std::make_shared<Conv2d>(width, width, 3, stride, 1, gen, false, groups));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(width));
    conv3_ = register_module("conv3", std::make_shared<Conv2d>(width, out, 1, 1, 0, gen));
    bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out));
    relu_ = register_module("relu", std::make_shared<ReLU>());
    if (stride != 1 || in != out)
      downsample_ = register_module("downsample", downsample(in, out, stride, gen));
  }
  // Each batch norm runs fused with its relu (and the last with the residual add).
  Variable forward(const Variable& x) override {
    Variable h = bn1_->forward_act((*conv1_)(x), Variable(), true);
    h = bn2_->forward_act((*conv2_)(h), Variable(), true);
    const Variable identity = downsample_ ? (*downsample_)(x) : x;
    return bn3_->forward_act((*conv3_)(h), identity, true);
  }
  std::string type_name() const override { return "Bottleneck"; }

 private:
  std::shared_ptr<Module> conv1_, conv2_, conv3_, relu_, downsample_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
};

// The stages: blocks per stage and their widths (the stem has the first stage's width); and
// torchvision's groups and width_per_group of a Bottleneck's 3x3 conv.
struct Depth {
  bool bottleneck;
  std::vector<int> blocks;
  std::vector<int64_t> widths = {64, 128, 256, 512};
  int64_t groups = 1, width_per_group = 64;
  int64_t inner_width(int64_t planes) const { return planes * width_per_group / 64 * groups; }
};
const Depth kResNet18{false, {2, 2, 2, 2}};
const Depth kResNet34{false, {3, 4, 6, 3}};
const Depth kResNet50{true, {3, 4, 6, 3}};
const Depth kResNet101{true, {3, 4, 23, 3}};
const Depth kResNet152{true, {3, 8, 36, 3}};
const Depth kWideResNet50{true, {3, 4, 6, 3}, {64, 128, 256, 512}, 1, 128};
const Depth kWideResNet101{true, {3, 4, 23, 3}, {64, 128, 256, 512}, 1, 128};
// Xie et al. 2017 (ResNeXt), as torchvision: the 3x3 conv of every Bottleneck in 32 (or 64)
// groups of 4 (or 8) channels at the first stage, doubling with the stages.
const Depth kResNeXt50_32x4d{true, {3, 4, 6, 3}, {64, 128, 256, 512}, 32, 4};
const Depth kResNeXt101_32x8d{true, {3, 4, 23, 3}, {64, 128, 256, 512}, 32, 8};
const Depth kResNeXt101_64x4d{true, {3, 4, 23, 3}, {64, 128, 256, 512}, 64, 4};
// He et al. 2016, section 4.2 (CIFAR-10): a 3x3 stem of 16 filters, then n BasicBlocks at each
// of 16, 32 and 64 filters (the first of the last two stages with stride 2), global average
// pool, fc: 6n + 2 weighted layers. Where a block changes the shape the shortcut is
// torchvision's 1x1 conv + BN (the paper's option B); the paper's CIFAR table used option A
// (subsampling and zero channels, no parameters): 272,474 parameters for resnet20 against 0.27M.
Depth cifar_depth(int n) { return Depth{false, {n, n, n}, {16, 32, 64}}; }

class ResNet : public Module {
 public:
  ResNet(const ModelSpec& s, bool small_images, const Depth& depth) {
    Generator gen(s.seed);
    const int64_t stem = depth.widths[0];
    if (small_images) {
      conv1_ = register_module("conv1", std::make_shared<Conv2d>(s.channels, stem, 3, 1, 1, gen));
    } else {
      conv1_ = register_module("conv1", std::make_shared<Conv2d>(s.channels, stem, 7, 2, 3, gen));
    }
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(stem));
    relu_ = register_module("relu", std::make_shared<ReLU>());  // fused into bn1; kept for names
    if (!small_images) maxpool_ = register_module("maxpool", std::make_shared<MaxPool2d>(3, 2, 1));
    int64_t in = stem;
    const std::vector<int64_t>& widths = depth.widths;
    for (size_t l = 0; l < depth.blocks.size(); ++l) {
      auto layer = std::make_shared<Sequential>();
      for (int b = 0; b < depth.blocks[l]; ++b) {
        const int64_t stride = (b == 0 && l > 0) ? 2 : 1;
        if (depth.bottleneck) {
          layer->add(std::make_shared<Bottleneck>(in, widths[l], depth.inner_width(widths[l]),
                                                  depth.groups, stride, gen));
          in = widths[l] * Bottleneck::kExpansion;
        } else {
          layer->add(std::make_shared<BasicBlock>(in, widths[l], stride, gen));
          in = widths[l];
        }
      }
      layers_.push_back(register_module("layer" + std::to_string(l + 1), layer));
    }
    avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool>());
    fc_ = register_module("fc", std::make_shared<Linear>(in, s.num_classes, gen));
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
  std::vector<std::shared_ptr<Module>> layers_;
};

// Every ResNet by its --arch name: torchvision's (7x7/2 stem and max pool), some *_cifar
// variants (3x3/1 stem, no max pool), and He et al.'s CIFAR ResNets (6n + 2 layers).
struct Entry {
  const char* name;
  bool small_images;
  Depth depth;
};
const bool kRegistered = [] {
  const Entry entries[] = {{"resnet18", false, kResNet18},
                           {"resnet18_cifar", true, kResNet18},
                           {"resnet34", false, kResNet34},
                           {"resnet34_cifar", true, kResNet34},
                           {"resnet50", false, kResNet50},
                           {"resnet50_cifar", true, kResNet50},
                           {"resnet101", false, kResNet101},
                           {"resnet101_cifar", true, kResNet101},
                           {"resnet152", false, kResNet152},
                           {"resnet152_cifar", true, kResNet152},
                           {"wide_resnet50_2", false, kWideResNet50},
                           {"wide_resnet101_2", false, kWideResNet101},
                           {"resnext50_32x4d", false, kResNeXt50_32x4d},
                           {"resnext50_32x4d_cifar", true, kResNeXt50_32x4d},
                           {"resnext101_32x8d", false, kResNeXt101_32x8d},
                           {"resnext101_64x4d", false, kResNeXt101_64x4d},
                           {"resnet20", true, cifar_depth(3)},
                           {"resnet32", true, cifar_depth(5)},
                           {"resnet44", true, cifar_depth(7)},
                           {"resnet56", true, cifar_depth(9)},
                           {"resnet110", true, cifar_depth(18)}};
  for (const Entry& e : entries)
    register_model(e.name, [e](const ModelSpec& s) -> std::shared_ptr<Module> {
      return std::make_shared<ResNet>(s, e.small_images, e.depth);
    });
  return true;
}();
}  // namespace

}  // namespace mlai::nn
