// Vision Transformers as torchvision builds them: names, shapes and counts of torchvision 0.29,
// its initialisation, the patch grid from the data's image size (and the error for a size that
// is no multiple of the patch), and mixed precision: fp16 and bf16 working copies give the
// float32 logits and gradients to their rounding. (ResNet.SgdStepsLowerTheLossOnOneBatch and
// ResNet.ActivationCheckpointingChangesNoNumber take vit_cifar too; tools/parity_resnet.py
// --arch vit_cifar checks the numbers against PyTorch.)
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/models.h"
#include "model_spec.h"
#include "nn/optim.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

ModelSpec spec(int64_t hw, int64_t c, int classes = 10) {
  return test::image_spec(hw, c, classes, 6);
}

// torchvision.models.vit_b_16(): 86,567,656 parameters in 152 state_dict entries.
TEST(VisionTransformer, TorchvisionNamesShapesAndCounts) {
  auto m = make_model("vit_b_16", spec(224, 3, 1000));
  EXPECT_EQ(m->parameter_count(), 86567656);
  const auto params = m->named_parameters();
  EXPECT_EQ(params.size() + m->named_buffers().size(), 152u);
  EXPECT_EQ(params.front().first, "class_token");  // torchvision's state_dict order
  EXPECT_EQ(params.back().first, "heads.head.bias");
  std::map<std::string, Shape> by_name;
  for (auto& [name, v] : params) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("class_token"), (Shape{1, 1, 768}));
  EXPECT_EQ(by_name.at("conv_proj.weight"), (Shape{768, 16, 16, 3}));  // OHWI
  EXPECT_EQ(by_name.at("encoder.pos_embedding"), (Shape{1, 197, 768}));
  const std::string b = "encoder.layers.encoder_layer_11.";
  EXPECT_EQ(by_name.at(b + "ln_1.weight"), (Shape{768}));
  EXPECT_EQ(by_name.at(b + "self_attention.in_proj_weight"), (Shape{2304, 768}));
  EXPECT_EQ(by_name.at(b + "self_attention.in_proj_bias"), (Shape{2304}));
  EXPECT_EQ(by_name.at(b + "self_attention.out_proj.weight"), (Shape{768, 768}));
  EXPECT_EQ(by_name.at(b + "mlp.0.weight"), (Shape{3072, 768}));
  EXPECT_EQ(by_name.at(b + "mlp.3.weight"), (Shape{768, 3072}));
  EXPECT_EQ(by_name.at("encoder.ln.bias"), (Shape{768}));
  EXPECT_EQ(by_name.count("encoder.layers.encoder_layer_12.ln_1.weight"), 0u);
  // The small CIFAR ViT: 65 tokens at 32x32, 50 at Fashion-MNIST's 28x28 and one channel.
  EXPECT_EQ(make_model("vit_cifar", spec(32, 3))->parameter_count(), 3195146);
  EXPECT_EQ(make_model("vit_cifar", spec(28, 1))->parameter_count(), 3183114);
  // vit_b_32 at 64x64 and 100 classes: 2x2 patches of 32, a 100-way head.
  EXPECT_EQ(make_model("vit_b_32", spec(64, 3, 100))->parameter_count(), 87497572);
}

TEST(VisionTransformer, TorchvisionInitialisation) {
  auto m = make_model("vit_cifar", spec(32, 3));
  std::map<std::string, std::vector<double>> p;
  for (auto& [name, v] : m->named_parameters()) p[name] = v.data().to_double_vector();
  auto stats = [](const std::vector<double>& v) {
    double s = 0, ss = 0, mx = 0;
    for (double x : v) {
      s += x;
      ss += x * x;
      mx = std::max(mx, std::abs(x));
    }
    const double mean = s / v.size();
    return std::array<double, 3>{mean, std::sqrt(ss / v.size() - mean * mean), mx};
  };
  auto all_equal = [](const std::vector<double>& v, double x) {
    return std::all_of(v.begin(), v.end(), [x](double y) { return y == x; });
  };
  EXPECT_TRUE(all_equal(p.at("class_token"), 0.0));
  EXPECT_TRUE(all_equal(p.at("heads.head.weight"), 0.0));  // torchvision zeroes the head
  EXPECT_TRUE(all_equal(p.at("heads.head.bias"), 0.0));
  EXPECT_NEAR(stats(p.at("encoder.pos_embedding"))[1], 0.02, 0.001);
  EXPECT_NEAR(stats(p.at("conv_proj.weight"))[1], std::sqrt(1.0 / 48), 0.01);
  EXPECT_TRUE(all_equal(p.at("conv_proj.bias"), 0.0));
  const std::string b = "encoder.layers.encoder_layer_3.";
  EXPECT_TRUE(all_equal(p.at(b + "ln_1.weight"), 1.0));
  EXPECT_TRUE(all_equal(p.at(b + "ln_2.bias"), 0.0));
  EXPECT_TRUE(all_equal(p.at(b + "self_attention.in_proj_bias"), 0.0));
  EXPECT_TRUE(all_equal(p.at(b + "self_attention.out_proj.bias"), 0.0));
  // Xavier-uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); its std is a / sqrt(3).
  const double a_in = std::sqrt(6.0 / (256 + 768)), a_mlp = std::sqrt(6.0 / (256 + 512));
  const auto in_proj = stats(p.at(b + "self_attention.in_proj_weight"));
  EXPECT_LE(in_proj[2], a_in);
  EXPECT_NEAR(in_proj[1], a_in / std::sqrt(3.0), 0.02 * a_in);
  const auto mlp0 = stats(p.at(b + "mlp.0.weight"));
  EXPECT_LE(mlp0[2], a_mlp);
  EXPECT_NEAR(mlp0[1], a_mlp / std::sqrt(3.0), 0.02 * a_mlp);
  EXPECT_NEAR(stats(p.at(b + "mlp.3.bias"))[1], 1e-6, 2e-7);
  // nn.Linear's default for out_proj: U(-1/sqrt(256), 1/sqrt(256)).
  EXPECT_LE(stats(p.at(b + "self_attention.out_proj.weight"))[2], 1.0 / 16);
}

TEST(VisionTransformer, PatchGridFollowsTheImagesAndRefusesOtherSizes) {
  tensor::Generator g(1);
  auto m = make_model("vit_cifar", spec(12, 1));  // 3x3 patches + the class token
  std::map<std::string, Shape> by_name;
  for (auto& [name, v] : m->named_parameters()) by_name[name] = v.shape();
  EXPECT_EQ(by_name.at("encoder.pos_embedding"), (Shape{1, 10, 256}));
  const Tensor x = Tensor::normal({2, 12, 12, 1}, 0, 1, g);
  EXPECT_EQ((*m)(autograd::Variable(x)).shape(), (Shape{2, 10}));
  try {
    make_model("vit_cifar", spec(30, 3));
    FAIL() << "30x30 images with patches of 4 were accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--arch vit_cifar"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("patch size 4"), std::string::npos) << e.what();
  }
}

// --no-bias-decay on a ViT: besides biases and layer norms, the class token and the position
// embeddings are not decayed (timm's no_weight_decay()); matrices and the patch filter are.
// With zero gradients one AdamW step only decays: a decayed tensor shrinks by 1 - lr * wd.
TEST(VisionTransformer, NoBiasDecaySparesTheTokenEmbeddings) {
  auto m = make_model("vit_cifar", spec(8, 3));
  auto params = m->named_parameters();
  for (auto& [name, v] : params)  // (the head and class token start at 0)
    v.data().copy_from(Tensor::full(v.shape(), 1.0));
  OptimizerConfig oc;
  oc.name = "adamw";
  oc.lr = 0.1;
  oc.weight_decay = 0.5;
  oc.no_bias_decay = true;
  auto opt = make_optimizer(params, oc);
  for (auto& [name, v] : params) v.set_grad(Tensor::zeros(v.shape()));
  opt->step();
  std::map<std::string, double> after;
  for (auto& [name, v] : params) after[name] = v.data().to_double_vector()[0];
  for (const char* spared : {"class_token", "encoder.pos_embedding", "conv_proj.bias",
                             "encoder.layers.encoder_layer_2.ln_1.weight",
                             "encoder.layers.encoder_layer_2.self_attention.in_proj_bias",
                             "encoder.ln.bias", "heads.head.bias"})
    EXPECT_EQ(after.at(spared), 1.0) << spared;
  for (const char* decayed : {"conv_proj.weight",
                              "encoder.layers.encoder_layer_2.self_attention.in_proj_weight",
                              "encoder.layers.encoder_layer_2.mlp.3.weight", "heads.head.weight"})
    EXPECT_NEAR(after.at(decayed), 1.0 - 0.1 * 0.5, 1e-7) << decayed;
}

// Mixed precision: the linears, the patch convolution, attention and GELU in fp16 or bf16,
// layer norm's parameters in float32. The logits and the gradients of the float32 masters
// match the float32 model's to the half types' rounding.
TEST(VisionTransformer, MixedPrecisionMatchesFloat32) {
  tensor::Generator g(3);
  const Tensor x = Tensor::normal({4, 8, 8, 3}, 0, 1, g);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{1, 3, 5, 7}, {4});
  const Tensor head = Tensor::normal({10, 256}, 0, 0.1, g);
  auto run = [&](DType dt) {
    auto m = make_model("vit_cifar", spec(8, 3));
    // A head that is not zero, so that gradients reach the whole network.
    for (auto& [name, v] : m->named_parameters())
      if (name == "heads.head.weight") v.data().copy_from(head);
    m->set_compute_dtype(dt);
    autograd::Variable logits = (*m)(autograd::Variable(x.to(dt)));
    autograd::Variable loss = autograd::cross_entropy(logits, y);
    loss.backward();
    std::vector<std::vector<double>> out{logits.data().to_double_vector()};
    const auto working = m->working_parameters();
    const auto params = m->named_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      const auto& v = working[i].defined() ? working[i] : params[i].second;
      out.push_back(v.grad().to_double_vector());
    }
    return out;
  };
  const auto ref = run(DType::kFloat32);
  for (auto [dt, tol] : {std::pair{DType::kFloat16, 1e-2}, {DType::kBFloat16, 6e-2}}) {
    const auto got = run(dt);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      double err = 0, scale = 1e-6;
      for (size_t j = 0; j < ref[i].size(); ++j) {
        err = std::max(err, std::abs(got[i][j] - ref[i][j]));
        scale = std::max(scale, std::abs(ref[i][j]));
      }
      EXPECT_LT(err / scale, tol) << tensor::dtype_name(dt) << " tensor " << i;
    }
  }
}

}  // namespace
}  // namespace mlai::nn
