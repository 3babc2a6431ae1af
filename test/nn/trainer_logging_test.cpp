// Lightning's per-step logging on the trainer, on the small synthetic MNIST-format set:
// train/loss_step and train/lr_step every n steps (log_every_n_steps), the HPARAMS session and
// test scalars, --log-grad-norm's train/grad_norm_step, and --log-histograms.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "io/image_decode.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// Lightning's log_every_n_steps: every 5th optimizer step's training loss and learning rate in
// the run's TensorBoard file, at exactly those steps, beside the per-epoch scalars.
TEST_F(TrainerTest, LogsEveryNthStepsLossToTensorBoard) {
  Config c = base();
  c.log_every_n_steps = 5;  // 2 epochs of 18 steps: steps 5, 10, ..., 35
  c.lr = 0.01;
  const FitResult r = Trainer(c).fit();
  std::string events;
  for (auto& e : fs::directory_iterator(r.version_dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) events = e.path();
  ASSERT_FALSE(events.empty());
  std::vector<int64_t> loss_steps, lr_steps;
  std::vector<float> losses, lrs;
  std::set<std::string> tags;
  for (const std::string& rec : testing::read_records(events)) {
    const testing::Scalar sc = testing::decode_scalar(rec);
    tags.insert(sc.tag);
    if (sc.tag == "train/loss_step") {
      loss_steps.push_back(sc.step);
      losses.push_back(sc.value);
    } else if (sc.tag == "train/lr_step") {
      lr_steps.push_back(sc.step);
      lrs.push_back(sc.value);
    }
  }
  const std::vector<int64_t> want{5, 10, 15, 20, 25, 30, 35};
  EXPECT_EQ(loss_steps, want);
  EXPECT_EQ(lr_steps, want);
  ASSERT_EQ(losses.size(), want.size());
  for (float l : losses) EXPECT_TRUE(std::isfinite(l) && l > 0) << l;
  EXPECT_LT(losses.back(), losses.front());  // it learns
  for (size_t i = 0; i < lrs.size(); ++i) {  // the cosine schedule, falling from --lr
    EXPECT_LE(lrs[i], 0.01f);
    if (i > 0) {
      EXPECT_LT(lrs[i], lrs[i - 1]);
    }
  }
  // The HPARAMS tab's session (start and finished end) and the test metrics (test/io checks
  // the hparams encoding against TensorBoard's plugin).
  EXPECT_TRUE(tags.count("_hparams_/session_start_info"));
  EXPECT_TRUE(tags.count("_hparams_/session_end_info"));
  EXPECT_TRUE(tags.count("test/accuracy"));
  EXPECT_TRUE(tags.count("test/loss"));
  Config off = base();
  off.log_every_n_steps = -1;
  EXPECT_THROW(off.validate(), std::invalid_argument);
}

// --log-grad-norm: train/grad_norm_step at the logged steps is the 2-norm of the gradients the
// optimizer used. One plain SGD step (no momentum or decay) moves the weights by lr x gradient,
// so the norm of the change / lr is the logged value. Under --precision 16 the value is of the
// unscaled gradients (not 65536 times larger).
TEST_F(TrainerTest, LogsTheGradientNormOfTheStep) {
  auto grad_norms = [](const std::string& dir) {
    std::vector<std::pair<int64_t, float>> out;
    for (auto& e : fs::directory_iterator(dir))
      if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
        for (const std::string& rec : testing::read_records(e.path()))
          if (const testing::Scalar sc = testing::decode_scalar(rec);
              sc.tag == "train/grad_norm_step")
            out.emplace_back(sc.step, sc.value);
    return out;
  };
  Config c = base();
  c.optimizer = "sgd";
  c.momentum = 0;
  c.lr = 0.5;
  c.lr_schedule = "constant";
  c.max_steps = 1;
  c.epochs = 1;
  c.log_every_n_steps = 1;
  c.log_grad_norm = true;
  Trainer t(c);
  const auto before = weights(t);
  const FitResult r = t.fit();
  const auto after = weights(t);
  double sq = 0;
  for (size_t i = 0; i < before.size(); ++i)
    for (size_t k = 0; k < before[i].size(); ++k) {
      const double g = (static_cast<double>(before[i][k]) - after[i][k]) / c.lr;
      sq += g * g;
    }
  const auto logged = grad_norms(r.version_dir);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0].first, 1);
  EXPECT_NEAR(logged[0].second, std::sqrt(sq), 1e-3 * std::sqrt(sq));
  // Mixed precision: the same first step's gradients, unscaled, within fp16's rounding.
  Config h = c;
  h.precision = "16";
  h.experiment_name = "fp16";
  const auto logged16 = grad_norms(Trainer(h).fit().version_dir);
  ASSERT_EQ(logged16.size(), 1u);
  EXPECT_NEAR(logged16[0].second, logged[0].second, 0.02 * logged[0].second);
  // Off by default: no such scalar.
  Config d = c;
  d.log_grad_norm = false;
  d.experiment_name = "off";
  EXPECT_TRUE(grad_norms(Trainer(d).fit().version_dir).empty());
}

// --log-histograms: at each epoch's end a histogram of every parameter (weights/<name>), whose
// count is the parameter's size and whose moments are its values'.
TEST_F(TrainerTest, LogsAHistogramOfEveryParameterEachEpoch) {
  Config c = base();
  c.log_histograms = true;
  Trainer t(c);
  const FitResult r = t.fit();
  std::map<std::string, std::vector<int64_t>> steps;      // tag -> steps
  std::map<std::string, std::pair<double, double>> last;  // tag -> (num, sum) at the last step
  for (auto& e : fs::directory_iterator(r.version_dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) != 0) continue;
    for (const testing::SummaryValue& v : testing::summary_values(e.path())) {
      if (v.field != 5) continue;  // HistogramProto
      double num = -1, sum = 0;
      for (const testing::Field& h : testing::parse_proto(v.bytes)) {
        if (h.number == 3) std::memcpy(&num, &h.num, 8);
        if (h.number == 4) std::memcpy(&sum, &h.num, 8);
      }
      steps[v.tag].push_back(v.step);
      last[v.tag] = {num, sum};
    }
  }
  const auto params = t.model().named_parameters();
  ASSERT_EQ(steps.size(), params.size());
  for (const auto& [name, v] : params) {
    const std::string tag = "weights/" + name;
    EXPECT_EQ(steps[tag], (std::vector<int64_t>{18, 36})) << tag;
    EXPECT_EQ(last[tag].first, static_cast<double>(v.numel())) << tag;
    double sum = 0;
    for (float x : v.data().to_vector<float>()) sum += x;
    EXPECT_NEAR(last[tag].second, sum, 1e-9 * (1 + std::fabs(sum)) + 1e-9) << tag;
  }
}

// --log-images: each epoch's first batch, its first N images in one grid at the epoch's first
// step; every tile is, pixel for pixel, one of the training set's images (no augmentation for
// MNIST: normalising and back is exact), with black padding around.
TEST_F(TrainerTest, LogsEachEpochsFirstImagesAsOneGrid) {
  Config c = base();
  c.log_images = 5;
  Trainer t(c);
  const FitResult r = t.fit();
  const io::Dataset& train = t.data().train;
  std::set<std::string> known;  // each training image's bytes
  for (int64_t i = 0; i < train.count; ++i)
    known.insert(std::string(train.images.begin() + i * 784, train.images.begin() + (i + 1) * 784));
  std::vector<int64_t> steps;
  for (auto& e : fs::directory_iterator(r.version_dir)) {
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) != 0) continue;
    for (const testing::SummaryValue& v : testing::summary_values(e.path())) {
      if (v.field != 4) continue;  // Summary.Image
      int64_t h = 0, w = 0, cs = 0;
      std::string png;
      for (const testing::Field& im : testing::parse_proto(v.bytes)) {
        if (im.number == 1) h = int64_t(im.num);
        if (im.number == 2) w = int64_t(im.num);
        if (im.number == 3) cs = int64_t(im.num);
        if (im.number == 4) png = im.bytes;
      }
      EXPECT_EQ(v.tag, "train/images");
      steps.push_back(v.step);
      ASSERT_EQ(h, 28 + 4);      // one row of tiles, 2 pixels of padding around
      ASSERT_EQ(w, 5 * 30 + 2);  // five tiles
      EXPECT_EQ(cs, 1);
      const std::string file = r.version_dir + "/grid.png";
      std::ofstream(file, std::ios::binary) << png;
      const std::vector<uint8_t> px = io::decode_image(file, 1);
      ASSERT_EQ(px.size(), static_cast<size_t>(h * w));
      for (int k = 0; k < 5; ++k) {
        std::string tile;
        for (int y = 0; y < 28; ++y)
          for (int x = 0; x < 28; ++x)
            tile.push_back(static_cast<char>(px[static_cast<size_t>((2 + y) * w + 2 + k * 30 + x)]));
        EXPECT_TRUE(known.count(tile)) << "tile " << k << " at step " << v.step
                                       << " is no training image";
      }
      for (int64_t x = 0; x < w; ++x) EXPECT_EQ(px[static_cast<size_t>(x)], 0) << x;  // top padding
    }
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{0, 18}));
}

// --log-per-class: each class's recall and precision at every validation (the epochs' ends)
// and at the test, equal to the run's own confusion matrices.
TEST_F(TrainerTest, LogsEachClassesRecallAndPrecision) {
  Config c = base();
  c.log_per_class = true;
  const FitResult r = Trainer(c).fit();
  for (int k = 0; k < 10; ++k) {
    const std::string name = std::to_string(k);
    EXPECT_EQ(scalar_steps(r.version_dir, "val/recall/" + name), (std::vector<int64_t>{18, 36}));
    EXPECT_EQ(scalar_steps(r.version_dir, "val/precision/" + name), (std::vector<int64_t>{18, 36}));
    const auto val = scalar_values(r.version_dir, "val/recall/" + name);
    ASSERT_EQ(val.size(), 2u);
    EXPECT_FLOAT_EQ(val[1], static_cast<float>(r.val.confusion.recall(k)));
    const auto test = scalar_values(r.version_dir, "test/precision/" + name);
    ASSERT_EQ(test.size(), 1u);
    EXPECT_FLOAT_EQ(test[0], static_cast<float>(r.test.confusion.precision(k)));
  }
  Config off = base();
  off.experiment_name = "off";
  const FitResult r2 = Trainer(off).fit();
  EXPECT_TRUE(scalar_steps(r2.version_dir, "val/recall/0").empty());
}

}  // namespace
}  // namespace mlai::nn
