// Weights by name from a file (load_weights, behind mlai_train --pretrained / --reset-head) and
// mlai_predict end to end on a tiny checkpoint.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/variable.h"
#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/models.h"

namespace {

using namespace mlai;
namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("mlai-pretrained-" + std::to_string(getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::shared_ptr<nn::Module> cifar_resnet(int classes, uint64_t seed) {
  nn::ModelSpec s;
  s.height = s.width = 8;
  s.channels = 1;
  s.num_classes = classes;
  s.seed = seed;
  return nn::make_model("resnet18_cifar", s);
}

std::vector<float> values(nn::Module& m, const std::string& name) {
  for (auto& [n, p] : m.named_parameters())
    if (n == name) return p.data().to_vector<float>();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

std::pair<int, std::string> run(const std::string& prog, const std::string& args) {
  const std::string cmd = std::string(MLAI_BINARY_DIR) + "/bin/" + prog + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  const int status = p ? pclose(p) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Pretrained, ResetHeadLoadsAllButFcIntoANewClassCount) {
  auto ten = cifar_resnet(10, 1);
  const std::string path = temp_path("ten.h5");
  nn::save_checkpoint(path, *ten, nullptr, {}, nn::Config{});
  auto five = cifar_resnet(5, 2);
  const auto fc_before = values(*five, "fc.weight");
  nn::load_weights(path, *five, {"fc.weight", "fc.bias"});
  EXPECT_EQ(values(*five, "conv1.weight"), values(*ten, "conv1.weight"));
  EXPECT_EQ(values(*five, "layer4.1.bn2.weight"), values(*ten, "layer4.1.bn2.weight"));
  EXPECT_EQ(values(*five, "fc.weight"), fc_before);  // keeps its fresh init
}

TEST(Pretrained, MismatchListsEveryProblemInOneError) {
  const std::string path = temp_path("ten-b.h5");
  nn::save_checkpoint(path, *cifar_resnet(10, 1), nullptr, {}, nn::Config{});
  auto five = cifar_resnet(5, 2);
  try {
    nn::load_weights(path, *five, {});
    FAIL() << "expected a shape mismatch";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("mis-shaped: fc.weight (file [10, 512], model [5, 512])"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.bias"), std::string::npos) << msg;
  }
  nn::ModelSpec s;
  s.height = s.width = 8;
  s.hidden = {4};
  auto mlp = nn::make_model("mlp", s);
  try {
    nn::load_weights(path, *mlp, {});
    FAIL() << "expected missing and unexpected names";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected: bn1.bias"), std::string::npos) << msg;
  }
}

TEST(Pretrained, TrainFlagsAreChecked) {
  auto [code, out] = run("mlai_train", "--reset-head --fast-dev-run");
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("--reset-head"), std::string::npos) << out;
  std::tie(code, out) = run("mlai_train", "--pretrained /no/such.h5 --fast-dev-run");
  EXPECT_EQ(code, 2) << out;
}

TEST(Predict, WritesTheModelsLogitsAndPredictions) {
  nn::Config cfg;
  cfg.arch = "mlp";
  cfg.hidden = {8};
  nn::ModelSpec s;
  s.height = s.width = 4;
  s.num_classes = 3;
  s.hidden = cfg.hidden;
  s.seed = 7;
  auto model = nn::make_model("mlp", s);
  const std::string ckpt = temp_path("mlp.h5"), in = temp_path("in.h5"), out = temp_path("out.h5");
  nn::save_checkpoint(ckpt, *model, nullptr, {}, cfg);
  const int64_t n = 5;
  std::vector<uint8_t> pix(n * 16);
  for (size_t i = 0; i < pix.size(); ++i) pix[i] = static_cast<uint8_t>((i * 37) % 256);
  {
    io::H5Writer w(in);
    w.write("images", io::H5Type::kUInt8, {n, 4, 4, 1}, pix.data());
    w.set_attr("/", "mean", "[0.5]");
    w.set_attr("/", "std", "[0.25]");
    w.commit();
  }
  auto [code, msg] = run("mlai_predict", "--checkpoint " + ckpt + " --input " + in + " --output " +
                                             out + " --batch-size 2 --device cpu");
  ASSERT_EQ(code, 0) << msg;
  std::vector<float> x(pix.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = (pix[i] / 255.0f - 0.5f) / 0.25f;
  model->eval();
  autograd::NoGradGuard ng;
  const auto want = (*model)(autograd::Variable(tensor::Tensor::from_vector(x, {n, 4, 4, 1})))
                        .data().to_vector<float>();
  io::H5Reader r(out);
  std::vector<float> logits(n * 3);
  std::vector<int64_t> pred(n);
  r.read("logits", io::H5Type::kFloat32, logits.data(), {n, 3});
  r.read("predictions", io::H5Type::kInt64, pred.data(), {n});
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    for (int64_t k = 0; k < 3; ++k) {
      EXPECT_NEAR(logits[i * 3 + k], want[i * 3 + k], 1e-5);
      if (want[i * 3 + k] > want[i * 3 + best]) best = k;
    }
    EXPECT_EQ(pred[i], best);
  }
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --output " + out);
  EXPECT_EQ(code, 2) << msg;
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + in + " --output " +
                                                out + " --mean 0.1,0.2");
  EXPECT_EQ(code, 2) << msg;
  EXPECT_NE(msg.find("--mean"), std::string::npos) << msg;
}

}  // namespace
