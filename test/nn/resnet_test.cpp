// ResNet-18 (and -34, -50) and the small-image variants: torchvision's parameter names and shapes (OHWI here),
// parameter counts, torchvision's initialisation, output shapes, BatchNorm2d's buffers and
// modes, and that a few SGD steps on one batch lower the loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "nn/activation_checkpointing.h"
#include "nn/conv_layers.h"
#include "nn/models.h"
#include "model_spec.h"
#include "nn/optim.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

ModelSpec spec(int64_t hw, int64_t c) { return test::image_spec(hw, c, 10, 3); }

TEST(ResNet, TorchvisionNamesShapesAndCounts) {
  auto m = make_model("resnet18", spec(32, 3));
  // torchvision.models.resnet18(num_classes=10): 11,181,642 parameters.
  EXPECT_EQ(m->parameter_count(), 11181642);
  const auto p = m->named_parameters();
  ASSERT_EQ(p.size(), 62u);
  EXPECT_EQ(p.front().first, "conv1.weight");
  EXPECT_EQ(p.front().second.shape(), (Shape{64, 7, 7, 3}));  // OIHW 64x3x7x7 in torchvision
  EXPECT_EQ(p.back().first, "fc.bias");
  std::map<std::string, Shape> by_name;
  for (auto& [n, v] : p) by_name[n] = v.shape();
  EXPECT_EQ(by_name.at("layer2.0.downsample.0.weight"), (Shape{128, 1, 1, 64}));
  EXPECT_EQ(by_name.at("layer4.1.bn2.weight"), (Shape{512}));
  EXPECT_EQ(by_name.at("fc.weight"), (Shape{10, 512}));
  EXPECT_EQ(by_name.count("layer1.0.downsample.0.weight"), 0u);
  const auto b = m->named_buffers();
  EXPECT_EQ(b.size(), 60u);  // 20 BN layers x (running_mean, running_var, num_batches_tracked)
  EXPECT_EQ(b[0].first, "bn1.running_mean");
  EXPECT_EQ(b[2].first, "bn1.num_batches_tracked");
  // The small-image variant: 3x3 stem, no max pool: 11,173,962 parameters.
  EXPECT_EQ(make_model("resnet18_cifar", spec(32, 3))->parameter_count(), 11173962);
  // One input channel (Fashion-MNIST) changes only the stem.
  EXPECT_EQ(make_model("resnet18_cifar", spec(28, 1))->parameter_count(), 11173962 - 9 * 64 * 2);
}

// ResNet-34 (BasicBlocks [3, 4, 6, 3]) and ResNet-50 (Bottlenecks [3, 4, 6, 3], expansion 4,
// the stride on the 3x3 conv): torchvision 0.29's counts and names. (tools/parity_resnet.py
// --arch resnet50 checks the numbers against PyTorch: the same logits and step to 1e-13 in
// float64.)
TEST(ResNet, DeeperResNetsHaveTorchvisionsCountsAndNames) {
  ModelSpec in1k = spec(32, 3);
  in1k.num_classes = 1000;
  // torchvision.models.resnet34() / resnet50(): 21,797,672 and 25,557,032 parameters, 218 and
  // 320 state_dict entries (110 and 161 parameters).
  auto r34 = make_model("resnet34", in1k);
  EXPECT_EQ(r34->parameter_count(), 21797672);
  EXPECT_EQ(r34->named_parameters().size() + r34->named_buffers().size(), 218u);
  auto r50 = make_model("resnet50", in1k);
  EXPECT_EQ(r50->parameter_count(), 25557032);
  const auto p = r50->named_parameters();
  EXPECT_EQ(p.size(), 161u);
  EXPECT_EQ(p.size() + r50->named_buffers().size(), 320u);
  std::map<std::string, Shape> by_name;
  for (auto& [n, v] : p) by_name[n] = v.shape();
  EXPECT_EQ(by_name.at("layer1.0.conv1.weight"), (Shape{64, 1, 1, 64}));
  EXPECT_EQ(by_name.at("layer1.0.downsample.0.weight"), (Shape{256, 1, 1, 64}));  // 64 -> 256
  EXPECT_EQ(by_name.at("layer2.0.conv2.weight"), (Shape{128, 3, 3, 128}));
  EXPECT_EQ(by_name.at("layer3.5.conv3.weight"), (Shape{1024, 1, 1, 256}));
  EXPECT_EQ(by_name.at("layer4.2.bn3.weight"), (Shape{2048}));
  EXPECT_EQ(by_name.at("fc.weight"), (Shape{1000, 2048}));
  EXPECT_EQ(by_name.count("layer1.1.downsample.0.weight"), 0u);
  // The small-image variants with 10 classes: 21,282,122 and 23,520,842.
  EXPECT_EQ(make_model("resnet34_cifar", spec(32, 3))->parameter_count(), 21282122);
  EXPECT_EQ(make_model("resnet50_cifar", spec(32, 3))->parameter_count(), 23520842);
  // A forward pass: logits of the batch's size and the class count.
  auto small = make_model("resnet50_cifar", spec(8, 1));
  small->eval();
  tensor::Generator g(1);
  const Tensor x = Tensor::uniform({2, 8, 8, 1}, -1, 1, g);
  EXPECT_EQ((*small)(autograd::Variable(x)).shape(), (Shape{2, 10}));
}

// ResNet-101 and -152 (Bottlenecks [3, 4, 23, 3] and [3, 8, 36, 3]), Wide ResNet-50-2 and
// -101-2 (the Bottleneck's inner 1x1 and 3x3 convs twice as wide, its output not) and the
// ResNeXts (the 3x3 conv grouped): torchvision 0.29's parameter counts, state_dict sizes and
// shapes, and the small-image variants' counts.
TEST(ResNet, DeepAndWideResNetsHaveTorchvisionsCountsAndNames) {
  ModelSpec in1k = spec(32, 3);
  in1k.num_classes = 1000;
  const struct {
    const char* arch;
    int64_t params;
    size_t state;  // state_dict entries
  } nets[] = {{"resnet101", 44549160, 626},       {"resnet152", 60192808, 932},
              {"wide_resnet50_2", 68883240, 320}, {"wide_resnet101_2", 126886696, 626},
              {"resnext50_32x4d", 25028904, 320}, {"resnext101_32x8d", 88791336, 626},
              {"resnext101_64x4d", 83455272, 626}};
  for (const auto& n : nets) {
    SCOPED_TRACE(n.arch);
    auto m = make_model(n.arch, in1k);
    EXPECT_EQ(m->parameter_count(), n.params);
    EXPECT_EQ(m->named_parameters().size() + m->named_buffers().size(), n.state);
  }
  auto wide = make_model("wide_resnet50_2", in1k);
  std::map<std::string, Shape> by_name;
  for (auto& [name, v] : wide->named_parameters()) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("layer1.0.conv1.weight"), (Shape{128, 1, 1, 64}));
  EXPECT_EQ(by_name.at("layer1.0.conv2.weight"), (Shape{128, 3, 3, 128}));
  EXPECT_EQ(by_name.at("layer1.0.conv3.weight"), (Shape{256, 1, 1, 128}));
  EXPECT_EQ(by_name.at("layer4.2.conv3.weight"), (Shape{2048, 1, 1, 1024}));
  // ResNeXt-50 32x4d: the 3x3 conv grouped, 32 groups of 4 channels at the first stage (width
  // 128 = 2 x 64 planes), filters of 4 input channels each.
  auto resnext = make_model("resnext50_32x4d", in1k);
  by_name.clear();
  for (auto& [name, v] : resnext->named_parameters()) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("layer1.0.conv1.weight"), (Shape{128, 1, 1, 64}));
  EXPECT_EQ(by_name.at("layer1.0.conv2.weight"), (Shape{128, 3, 3, 4}));
  EXPECT_EQ(by_name.at("layer4.0.conv2.weight"), (Shape{1024, 3, 3, 32}));
  EXPECT_EQ(by_name.at("layer4.2.conv3.weight"), (Shape{2048, 1, 1, 1024}));
  EXPECT_EQ(make_model("resnext50_32x4d_cifar", spec(32, 3))->parameter_count(), 22992714);
  EXPECT_EQ(make_model("resnet101_cifar", spec(32, 3))->parameter_count(), 42512970);
  EXPECT_EQ(make_model("resnet152_cifar", spec(32, 3))->parameter_count(), 58156618);
}

// He et al.'s CIFAR ResNets (6n + 2 layers: a 16-filter stem, n BasicBlocks at each of 16, 32
// and 64 filters). The paper's option-A shortcuts have no parameters: 269,722 / 464,154 /
// 658,586 / 853,018 / 1,727,962 for depths 20 / 32 / 44 / 56 / 110 (its 0.27M ... 1.7M). These
// use 1x1 conv + BN projections at the two stage changes: 16*32 + 2*32 + 32*64 + 2*64 = 2,752
// more.
TEST(ResNet, CifarResNetsHaveThePapersLayersAndParameters) {
  const std::pair<const char*, int64_t> option_a[] = {{"resnet20", 269722},
                                                      {"resnet32", 464154},
                                                      {"resnet44", 658586},
                                                      {"resnet56", 853018},
                                                      {"resnet110", 1727962}};
  for (const auto& [arch, count] : option_a) {
    auto m = make_model(arch, spec(32, 3));
    EXPECT_EQ(m->parameter_count(), count + 2752) << arch;
    // 6n + 1 convolutions in the stem and blocks (plus the fc): depth - 1.
    int convs = 0;
    for (auto& [n, v] : m->named_parameters())
      convs += v.shape().size() == 4 && n.find("downsample") == std::string::npos;
    EXPECT_EQ(convs, std::stoi(std::string(arch).substr(6)) - 1) << arch;
  }
  auto r20 = make_model("resnet20", spec(28, 1));
  std::map<std::string, Shape> by_name;
  for (auto& [n, v] : r20->named_parameters()) by_name[n] = v.shape();
  EXPECT_EQ(by_name.at("conv1.weight"), (Shape{16, 3, 3, 1}));
  EXPECT_EQ(by_name.at("layer1.2.conv2.weight"), (Shape{16, 3, 3, 16}));
  EXPECT_EQ(by_name.at("layer2.0.conv1.weight"), (Shape{32, 3, 3, 16}));
  EXPECT_EQ(by_name.at("layer2.0.downsample.0.weight"), (Shape{32, 1, 1, 16}));
  EXPECT_EQ(by_name.at("layer3.2.bn2.weight"), (Shape{64}));
  EXPECT_EQ(by_name.at("fc.weight"), (Shape{10, 64}));
  EXPECT_EQ(by_name.count("layer1.0.downsample.0.weight"), 0u);  // 16 -> 16, stride 1
  EXPECT_EQ(by_name.count("layer4.0.conv1.weight"), 0u);
  // 28x28 -> 28, 14, 7 (the strided 3x3s pad 1) -> the pool -> logits.
  r20->eval();
  tensor::Generator g(3);
  autograd::NoGradGuard ng;
  EXPECT_EQ((*r20)(autograd::Variable(Tensor::normal({2, 28, 28, 1}, 0, 1, g))).shape(),
            (Shape{2, 10}));
}

// Zagoruyko and Komodakis's CIFAR Wide ResNets: the paper's parameter counts (WRN-16-4 2.7M,
// WRN-16-8 11.0M, WRN-22-8 17.2M, WRN-28-10 36.5M, WRN-40-4 8.9M; exactly those of
// tools/torch_interop.py's PyTorch WideResNet, whose state_dict sizes these are too), the
// block layout and names, the shortcut only where the shape changes, and dropout only when
// asked for (--dropout).
TEST(ResNet, WideResNetsHaveThePapersLayersAndParameters) {
  const struct {
    const char* arch;
    int64_t params;
    size_t state;
  } nets[] = {{"wrn16_4", 2748890, 83},
              {"wrn16_8", 10961370, 83},
              {"wrn22_8", 17158106, 119},
              {"wrn28_10", 36479194, 155},
              {"wrn40_4", 8949210, 227}};
  for (const auto& n : nets) {
    SCOPED_TRACE(n.arch);
    auto m = make_model(n.arch, spec(32, 3));
    EXPECT_EQ(m->parameter_count(), n.params);
    EXPECT_EQ(m->named_parameters().size() + m->named_buffers().size(), n.state);
  }
  auto m = make_model("wrn16_4", spec(32, 3));
  std::map<std::string, Shape> by_name;
  for (auto& [name, v] : m->named_parameters()) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("conv1.weight"), (Shape{16, 3, 3, 3}));
  EXPECT_EQ(by_name.at("block1.0.bn1.weight"), (Shape{16}));  // pre-activation of the stem
  EXPECT_EQ(by_name.at("block1.0.shortcut.weight"), (Shape{64, 1, 1, 16}));
  EXPECT_EQ(by_name.at("block2.0.conv1.weight"), (Shape{128, 3, 3, 64}));
  EXPECT_EQ(by_name.at("block3.1.conv2.weight"), (Shape{256, 3, 3, 256}));
  EXPECT_EQ(by_name.count("block3.1.shortcut.weight"), 0u);
  EXPECT_EQ(by_name.at("bn.weight"), (Shape{256}));
  EXPECT_EQ(by_name.at("fc.weight"), (Shape{10, 256}));
  // 8x8 input: stride 2 twice, then the global pool; logits of the batch and class count.
  tensor::Generator g(3);
  const Tensor x = Tensor::normal({2, 8, 8, 3}, 0, 1, g);
  for (double p : {0.0, 0.3}) {
    ModelSpec s = spec(8, 3);
    s.dropout = p;
    auto small = make_model("wrn16_4", s);
    EXPECT_EQ((*small)(autograd::Variable(x)).shape(), (Shape{2, 10}));
    // A Dropout between the convolutions of each of the 6 blocks (each with its generator).
    EXPECT_EQ(small->named_generators().size(), p > 0 ? 6u : 0u);
  }
}

// --activation-checkpointing changes no number: with each block checkpointed, two training
// steps (dropout included, in wrn16_4) give the loss, every gradient and the batch-norm
// statistics of the plain model bit for bit (the recomputation draws the same masks and does
// not update the statistics again). The mlp has no block to checkpoint.
TEST(ResNet, ActivationCheckpointingChangesNoNumber) {
  for (const char* arch :
       {"resnet20", "resnet50_cifar", "wrn16_4", "mobilenet_v2_cifar", "vit_cifar"}) {
    SCOPED_TRACE(arch);
    ModelSpec s = spec(8, 3);
    s.dropout = 0.3;  // (wrn, mobilenet and vit only)
    std::vector<double> out[2];
    for (int ck = 0; ck < 2; ++ck) {
      auto m = make_model(arch, s);
      if (ck) {
        EXPECT_GT(enable_activation_checkpointing(*m), 0);
      }
      tensor::Generator g(5);
      const Tensor y = Tensor::from_vector(std::vector<int64_t>{1, 3, 5, 7}, {4});
      for (int step = 0; step < 2; ++step) {
        const Tensor x = Tensor::normal({4, 8, 8, 3}, 0, 1, g);
        autograd::Variable loss = autograd::cross_entropy((*m)(autograd::Variable(x)), y);
        out[ck].push_back(loss.data().item());
        loss.backward();
      }
      for (auto& [n, v] : m->named_parameters())
        for (double d : v.grad().to_double_vector()) out[ck].push_back(d);
      for (auto& [n, b] : m->named_buffers())
        for (double d : b->to_double_vector()) out[ck].push_back(d);
    }
    EXPECT_EQ(out[1], out[0]);
  }
  EXPECT_EQ(enable_activation_checkpointing(*make_model("mlp", spec(28, 1))), 0);
}

TEST(ResNet, TorchvisionInitialisation) {
  auto m = make_model("resnet18", spec(32, 3));
  for (auto& [n, v] : m->named_parameters()) {
    const auto x = v.data().to_double_vector();
    if (n.find("bn") != std::string::npos || n.find("downsample.1") != std::string::npos) {
      for (double e : x) ASSERT_EQ(e, n.ends_with("weight") ? 1.0 : 0.0) << n;
    } else if (n == "layer3.0.conv1.weight") {  // kaiming normal, fan_out = 256 * 3 * 3
      double sq = 0;
      for (double e : x) sq += e * e;
      EXPECT_NEAR(std::sqrt(sq / static_cast<double>(x.size())), std::sqrt(2.0 / (256 * 9)), 2e-4);
    }
  }
}

TEST(ResNet, OutputShapesAndBatchNormModes) {
  tensor::Generator g(1);
  for (const char* arch : {"resnet18", "resnet18_cifar"}) {
    auto m = make_model(arch, spec(28, 1));
    const Tensor x = Tensor::normal({2, 28, 28, 1}, 0, 1, g);
    autograd::NoGradGuard ng;
    EXPECT_EQ((*m)(autograd::Variable(x)).shape(), (Shape{2, 10})) << arch;
  }
  BatchNorm2d bn(3);
  const Tensor x = Tensor::normal({4, 5, 5, 3}, 2.0, 3.0, g);
  const auto y = bn(autograd::Variable(x)).data().to_double_vector();  // training: batch stats
  double mean = 0;
  for (size_t i = 0; i < y.size(); i += 3) mean += y[i];
  EXPECT_NEAR(mean / (y.size() / 3), 0.0, 1e-5);
  auto bufs = bn.named_buffers();
  EXPECT_NEAR(bufs[0].second->to_double_vector()[0], 0.2, 0.1);  // 0.1 * ~2
  EXPECT_EQ(bufs[2].second->item(), 1.0);
  bn.eval();
  const auto ye = bn(autograd::Variable(x)).data().to_double_vector();
  EXPECT_GT(std::fabs(ye[0] - y[0]), 0.1);  // running statistics, not the batch's
  EXPECT_EQ(bufs[2].second->item(), 1.0);   // not counted in eval
}

TEST(ResNet, SgdStepsLowerTheLossOnOneBatch) {
  for (const char* arch :
       {"resnet18_cifar", "wrn16_4", "resnext50_32x4d_cifar", "mobilenet_v2_cifar", "vit_cifar"}) {
    SCOPED_TRACE(arch);
    tensor::Generator g(2);
    auto m = make_model(arch, spec(12, 1));
    const Tensor x = Tensor::normal({8, 12, 12, 1}, 0, 1, g);
    const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8});
    OptimizerConfig oc;
    // (ResNeXt-50's 16 Bottlenecks on 8 images overshoot at 0.05, as torchvision's do, and
    // wander for a few steps at 0.01 before they fall.)
    oc.lr = std::string(arch).starts_with("resnext") ? 0.01 : 0.05;
    oc.momentum = 0.9;
    auto opt = make_optimizer(m->named_parameters(), oc);
    double first = 0, last = 0;
    for (int step = 0; step < 12; ++step) {
      autograd::Variable loss = autograd::cross_entropy((*m)(autograd::Variable(x)), y);
      (step == 0 ? first : last) = loss.data().item();
      loss.backward();
      opt->step();
      opt->zero_grad();
    }
    EXPECT_LT(last, 0.5 * first);
  }
}

// Layer fusion (BatchNorm2d::forward_act, on by default) against the separate ops: in float64 the
// logits, the loss and every gradient agree to rounding, in training and in evaluation mode.
TEST(ResNet, FusedAndUnfusedLayersAgree) {
  struct FusionScope {
    ~FusionScope() { set_layer_fusion(true); }
  } restore;
  tensor::Generator g(4);
  const Tensor x = Tensor::normal({6, 10, 10, 1}, 0, 1, g, DType::kFloat64);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5}, {6});
  std::vector<std::vector<double>> out[2];
  for (bool fused : {true, false}) {
    set_layer_fusion(fused);
    auto m = make_model("resnet18_cifar", spec(10, 1));
    for (auto& [n, v] : m->named_parameters()) {
      Tensor& d = const_cast<autograd::Variable&>(v).data();
      d = tensor::cast(d, DType::kFloat64);
    }
    for (auto& [n, b] : m->named_buffers())
      if (b->dtype() == DType::kFloat32) *b = tensor::cast(*b, DType::kFloat64);
    for (bool training : {true, false}) {
      if (training)
        m->train();
      else
        m->eval();
      autograd::Variable logits = (*m)(autograd::Variable(x));
      autograd::Variable loss = autograd::cross_entropy(logits, y);
      loss.backward();
      out[fused].push_back(logits.data().to_double_vector());
      for (auto& [n, v] : m->named_parameters()) out[fused].push_back(v.grad().to_double_vector());
      m->zero_grad();
    }
    for (auto& [n, b] : m->named_buffers()) out[fused].push_back(b->to_double_vector());
  }
  ASSERT_EQ(out[0].size(), out[1].size());
  for (size_t i = 0; i < out[0].size(); ++i) {
    ASSERT_EQ(out[0][i].size(), out[1][i].size()) << i;
    double scale = 1e-300, err = 0;
    for (size_t j = 0; j < out[0][i].size(); ++j) {
      scale = std::max(scale, std::abs(out[0][i][j]));
      err = std::max(err, std::abs(out[0][i][j] - out[1][i][j]));
    }
    EXPECT_LE(err / scale, 1e-10) << "tensor " << i;
  }
}

}  // namespace
}  // namespace mlai::nn
