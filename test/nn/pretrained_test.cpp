// Weights by name from a file (load_weights, behind mlai_train --pretrained / --reset-head) and
// mlai_predict end to end on a tiny checkpoint.
#include <gtest/gtest.h>

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "autograd/variable.h"
#include "../run_program.h"
#include "io/h5file.h"
#include "io/image_resize.h"
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
  const auto r = mlai::testing::run_program(prog, args);
  return {r.code, r.out};
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
  // The same pixels as an IDX images file (MNIST's format: magic 2051, big-endian dims): the
  // same logits, with --mean/--std given (an IDX file has no statistics, nor this checkpoint).
  const std::string idx = temp_path("images-idx3-ubyte"), idx_out = temp_path("idx.h5");
  {
    std::ofstream f(idx, std::ios::binary);
    const uint8_t head[16] = {0, 0, 8, 3, 0, 0, 0, static_cast<uint8_t>(n), 0, 0, 0, 4, 0, 0, 0, 4};
    f.write(reinterpret_cast<const char*>(head), 16);
    f.write(reinterpret_cast<const char*>(pix.data()), static_cast<std::streamsize>(pix.size()));
  }
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + idx +
                                                " --output " + idx_out + " --mean 0.5 --std 0.25");
  ASSERT_EQ(code, 0) << msg;
  std::vector<float> idx_logits(n * 3);
  io::H5Reader(idx_out).read("logits", io::H5Type::kFloat32, idx_logits.data(), {n, 3});
  EXPECT_EQ(idx_logits, logits);
  // A labels file (magic 2049) is neither: one error naming the input and what it holds.
  const std::string labels = temp_path("labels-idx1-ubyte");
  {
    std::ofstream f(labels, std::ios::binary);
    const uint8_t head[9] = {0, 0, 8, 1, 0, 0, 0, 1, 3};
    f.write(reinterpret_cast<const char*>(head), 9);
  }
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + labels +
                                                " --output " + idx_out + " --mean 0.5 --std 0.25");
  EXPECT_EQ(code, 2) << msg;
  EXPECT_NE(msg.find("--input " + labels + " is neither"), std::string::npos) << msg;
  EXPECT_NE(msg.find("labels file"), std::string::npos) << msg;
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --output " + out);
  EXPECT_EQ(code, 2) << msg;
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + in + " --output " +
                                                out + " --mean 0.1,0.2");
  EXPECT_EQ(code, 2) << msg;
  EXPECT_NE(msg.find("--mean"), std::string::npos) << msg;
}

}  // namespace

namespace {

// A checkpoint that knows what it was trained on (as mlai_train writes them): mlai_predict
// normalizes with the training set's statistics, not the input's, names the classes, and
// takes image files, decoded and resized to the model's input, to the same predictions as the
// packed pixels.
TEST(Predict, ImageFilesWithTheCheckpointsSizeStatisticsAndNames) {
  nn::Config cfg;
  cfg.arch = "mlp";
  cfg.hidden = {8};
  nn::ModelSpec s;
  s.height = 4, s.width = 6, s.channels = 3;
  s.num_classes = 3;
  s.hidden = cfg.hidden;
  s.seed = 9;
  auto model = nn::make_model("mlp", s);
  const nn::DataInfo data{4, 6, 3, {0.3f, 0.4f, 0.5f}, {0.2f, 0.25f, 0.3f}, {"ant", "bee", "fly"}};
  const std::string ckpt = temp_path("trained.h5");
  nn::save_checkpoint(ckpt, *model, nullptr, {}, cfg, {}, &data);
  nn::DataInfo back;
  ASSERT_TRUE(nn::checkpoint_data(ckpt, &back));
  EXPECT_EQ(back.class_names, data.class_names);
  EXPECT_EQ(back.mean, data.mean);

  // Three PNGs of other sizes in nested folders; what the model should see of each.
  const std::string dir = temp_path("photos");
  std::vector<uint8_t> packed;
  const std::pair<int, int> sizes[] = {{9, 5}, {4, 6}, {12, 13}};
  const char* names[] = {"a/x.png", "a/y.png", "b.png"};
  for (int i = 0; i < 3; ++i) {
    const auto [h, w] = sizes[i];
    std::vector<uint8_t> px(static_cast<size_t>(h * w * 3));
    for (size_t k = 0; k < px.size(); ++k) px[k] = static_cast<uint8_t>((k * 53 + i * 17) % 256);
    const std::string file = dir + "/" + names[i];
    fs::create_directories(fs::path(file).parent_path());
    png_image img;
    std::memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width = static_cast<png_uint_32>(w);
    img.height = static_cast<png_uint_32>(h);
    img.format = PNG_FORMAT_RGB;
    ASSERT_NE(png_image_write_to_file(&img, file.c_str(), 0, px.data(), 0, nullptr), 0);
    const auto small = io::resize_bilinear(px, h, w, 3, 4, 6);
    packed.insert(packed.end(), small.begin(), small.end());
  }
  const std::string csv = temp_path("pred.csv"), h5 = temp_path("packed.h5"),
                    out = temp_path("pred.h5");
  auto [code, msg] = run("mlai_predict", "--checkpoint " + ckpt + " --input " + dir +
                                             " --output " + csv + " --device cpu");
  ASSERT_EQ(code, 0) << msg;
  {
    io::H5Writer w(h5);  // the same pixels packed, with statistics of its own (ignored)
    w.write("images", io::H5Type::kUInt8, {3, 4, 6, 3}, packed.data());
    w.set_attr("/", "mean", "[0.9, 0.9, 0.9]");
    w.set_attr("/", "std", "[0.1, 0.1, 0.1]");
    w.commit();
  }
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + h5 +
                                                " --output " + out + " --device cpu");
  ASSERT_EQ(code, 0) << msg;
  std::vector<float> x(packed.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = (packed[i] / 255.0f - data.mean[i % 3]) / data.std[i % 3];
  model->eval();
  autograd::NoGradGuard ng;
  const auto want = (*model)(autograd::Variable(tensor::Tensor::from_vector(x, {3, 4, 6, 3})))
                        .data().to_vector<float>();
  io::H5Reader r(out);
  std::vector<float> logits(9);
  r.read("logits", io::H5Type::kFloat32, logits.data(), {3, 3});
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(logits[k], want[k], 1e-5) << k;
  EXPECT_EQ(r.get_attr_string("/", "class_names"), "[\"ant\",\"bee\",\"fly\"]");
  // Packed images of another size than the training set's: one error saying both sizes.
  const std::string gray = temp_path("gray-idx3-ubyte");
  {
    std::ofstream f(gray, std::ios::binary);
    const uint8_t head[16] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 4};
    f.write(reinterpret_cast<const char*>(head), 16);
    f.write(reinterpret_cast<const char*>(packed.data()), 16);
  }
  std::tie(code, msg) = run("mlai_predict", "--checkpoint " + ckpt + " --input " + gray +
                                                " --output " + out + " --device cpu");
  EXPECT_EQ(code, 2) << msg;
  EXPECT_NE(msg.find("holds 4x4x1 images; " + ckpt + "'s model was trained on 4x6x3"),
            std::string::npos)
      << msg;
  // The CSV: the files in order (folder by folder), their predicted class by name.
  std::ifstream f(csv);
  std::vector<std::string> rows;
  for (std::string l; std::getline(f, l);) rows.push_back(l);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], "index,file,prediction,class,probability");
  const std::string order[] = {dir + "/b.png", dir + "/a/x.png", dir + "/a/y.png"};
  const int packed_index[] = {2, 0, 1};
  for (int i = 0; i < 3; ++i) {
    const float* row = &want[packed_index[i] * 3];
    const int best = static_cast<int>(std::max_element(row, row + 3) - row);
    EXPECT_EQ(rows[i + 1].rfind(std::to_string(i) + "," + order[i] + "," + std::to_string(best) +
                                    "," + data.class_names[best] + ",",
                                0),
              0u)
        << rows[i + 1];
  }
}

}  // namespace
