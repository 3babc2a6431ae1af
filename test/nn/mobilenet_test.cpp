// MobileNetV2 as torchvision builds it: names, shapes and counts of torchvision 0.29, its
// initialisation, which blocks add their input and output shapes at both strides (it learns a
// batch in ResNet.SgdStepsLowerTheLossOnOneBatch). (tools/parity_resnet.py --arch mobilenet_v2
// checks the numbers against PyTorch: logits and one SGD step agree to 1e-11 in float64.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/models.h"
#include "model_spec.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

ModelSpec spec(int64_t hw, int64_t c, int classes = 10) {
  return test::image_spec(hw, c, classes, 4);
}

// torchvision.models.mobilenet_v2(): 3,504,872 parameters and 314 state_dict entries for 1000
// classes; 2,236,682 parameters for 10.
TEST(MobileNetV2, TorchvisionNamesShapesAndCounts) {
  auto m = make_model("mobilenet_v2", spec(32, 3, 1000));
  EXPECT_EQ(m->parameter_count(), 3504872);
  EXPECT_EQ(m->named_parameters().size() + m->named_buffers().size(), 314u);
  std::map<std::string, Shape> by_name;
  for (auto& [name, v] : m->named_parameters()) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("features.0.0.weight"), (Shape{32, 3, 3, 3}));
  EXPECT_EQ(by_name.at("features.1.conv.0.0.weight"), (Shape{32, 3, 3, 1}));  // depthwise
  EXPECT_EQ(by_name.at("features.1.conv.1.weight"), (Shape{16, 1, 1, 32}));
  EXPECT_EQ(by_name.at("features.2.conv.0.0.weight"), (Shape{96, 1, 1, 16}));  // expand x6
  EXPECT_EQ(by_name.at("features.2.conv.1.0.weight"), (Shape{96, 3, 3, 1}));
  EXPECT_EQ(by_name.at("features.2.conv.2.weight"), (Shape{24, 1, 1, 96}));
  EXPECT_EQ(by_name.at("features.2.conv.3.bias"), (Shape{24}));
  EXPECT_EQ(by_name.at("features.17.conv.2.weight"), (Shape{320, 1, 1, 960}));
  EXPECT_EQ(by_name.at("features.18.0.weight"), (Shape{1280, 1, 1, 320}));
  EXPECT_EQ(by_name.at("classifier.1.weight"), (Shape{1000, 1280}));
  EXPECT_EQ(make_model("mobilenet_v2", spec(32, 3))->parameter_count(), 2236682);
  EXPECT_EQ(make_model("mobilenet_v2_cifar", spec(32, 3))->parameter_count(), 2236682);
  // One input channel: the stem's filters have one channel.
  EXPECT_EQ(make_model("mobilenet_v2_cifar", spec(28, 1))->parameter_count(), 2236682 - 32 * 9 * 2);
}

// kaiming-normal fan_out convolutions (fan_out = out x kh x kw, groups or not), batch norm 1/0,
// the classifier N(0, 0.01) with a zero bias.
TEST(MobileNetV2, TorchvisionInitialisation) {
  auto m = make_model("mobilenet_v2", spec(32, 3, 1000));
  auto rms = [](const std::vector<double>& x) {
    double sq = 0;
    for (double e : x) sq += e * e;
    return std::sqrt(sq / static_cast<double>(x.size()));
  };
  for (auto& [n, v] : m->named_parameters()) {
    const auto x = v.data().to_double_vector();
    if (n == "features.18.1.weight" || n == "features.5.conv.3.weight") {
      for (double e : x) ASSERT_EQ(e, 1.0) << n;
    } else if (n == "features.18.1.bias" || n == "classifier.1.bias") {
      for (double e : x) ASSERT_EQ(e, 0.0) << n;
    } else if (n == "features.16.conv.1.0.weight") {  // depthwise 960 x 3 x 3
      EXPECT_NEAR(rms(x), std::sqrt(2.0 / (960 * 9)), 0.05 * std::sqrt(2.0 / (960 * 9)));
    } else if (n == "features.16.conv.0.0.weight") {  // 1x1 160 -> 960
      EXPECT_NEAR(rms(x), std::sqrt(2.0 / 960), 0.01 * std::sqrt(2.0 / 960));
    } else if (n == "classifier.1.weight") {
      EXPECT_NEAR(rms(x), 0.01, 1e-4);
    }
  }
}

// Blocks add their input where the stride is 1 and the widths agree (10 of torchvision's 17).
// And the output shapes: 32x32 -> 1x1 features in
// mobilenet_v2, 4x4 in mobilenet_v2_cifar (stem and first 24-wide block at stride 1), same logits
// shape.
TEST(MobileNetV2, ResidualBlocksAndOutputShapes) {
  tensor::Generator g(3);
  for (const char* arch : {"mobilenet_v2", "mobilenet_v2_cifar"}) {
    SCOPED_TRACE(arch);
    auto m = make_model(arch, spec(32, 3));
    m->eval();
    autograd::NoGradGuard ng;
    const Tensor x = Tensor::normal({2, 32, 32, 3}, 0, 1, g);
    EXPECT_EQ((*m)(autograd::Variable(x)).shape(), (Shape{2, 10}));
    // The feature map before the pool: features.18's output.
    std::shared_ptr<Module> features;
    for (auto& [n, c] : m->children())
      if (n == "features") features = c;
    ASSERT_TRUE(features);
    const Shape f = (*features)(autograd::Variable(x)).shape();
    const int64_t side = std::string(arch) == "mobilenet_v2" ? 1 : 4;
    EXPECT_EQ(f, (Shape{2, side, side, 1280}));
    // With its last batch norm zeroed (weight and bias 0, evaluation mode) a block's branch
    // gives 0: a residual block then returns its input, any other block 0.
    int blocks = 0, residual = 0;
    for (auto& [n, c] : features->children()) {
      if (c->type_name() != "InvertedResidual") continue;
      ++blocks;
      const auto conv = c->children().at(0).second;
      const Shape w0 = conv->named_parameters().front().second.shape();
      const int64_t in = w0[1] == 3 && w0[3] == 1 ? w0[0] : w0[3];  // depthwise first: t = 1
      for (auto& [pn, p] : conv->children().back().second->named_parameters())
        p.data().copy_from(Tensor::zeros(p.shape()));
      const Tensor bx = Tensor::normal({1, 4, 4, in}, 0, 1, g);
      const auto out = (*c)(autograd::Variable(bx)).data().to_double_vector();
      const auto want = bx.to_double_vector();
      double most = 0;
      for (double e : out) most = std::max(most, std::fabs(e));
      if (out == want) {
        ++residual;
      } else {
        EXPECT_EQ(most, 0.0) << n;
      }
    }
    EXPECT_EQ(blocks, 17);
    EXPECT_EQ(residual, 10);
  }
}

}  // namespace
}  // namespace mlai::nn
