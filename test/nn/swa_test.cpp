// --swa-lrs: Lightning's StochasticWeightAveraging. The SWALR rates (against torch's), the start
// epoch as Lightning computes it, batch norm's cumulative statistics (update_bn), and training:
// the model ends as the equal average of the weights the SWA epochs started from, and a run
// split in two ends exactly as one straight run.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "nn/conv_layers.h"
#include "nn/lr_schedule.h"
#include "tensor/ops.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// torch.optim.swa_utils.SWALR(swa_lr=0.05, anneal_epochs=3) from lr 0.1, stepped per epoch
// (torch 2.15): cos 0.1, 0.0875, 0.0625, 0.05, ...; linear 0.1, 0.08333, 0.06667, 0.05, ...
TEST(Swa, RatesFollowSwalr) {
  const double cos_want[] = {0.1, 0.0875, 0.0625, 0.05, 0.05, 0.05};
  const double lin_want[] = {0.1, 0.08333333333333334, 0.06666666666666668, 0.05, 0.05, 0.05};
  for (int k = 0; k < 6; ++k) {
    EXPECT_NEAR(swa_lr_at(0.1, 0.05, k, 3, true), cos_want[k], 1e-15) << k;
    EXPECT_NEAR(swa_lr_at(0.1, 0.05, k, 3, false), lin_want[k], 1e-15) << k;
  }
  EXPECT_DOUBLE_EQ(swa_lr_at(0.1, 0.05, 0, 0, true), 0.05);  // no annealing: at once
}

TEST(Swa, StartEpochAsLightning) {
  Config c;
  c.epochs = 10;
  c.swa_epoch_start = "0.8";  // int(10 * 0.8) = 8, the 8th epoch: index 7
  EXPECT_EQ(swa_start_epoch(c), 7);
  c.swa_epoch_start = "5";
  EXPECT_EQ(swa_start_epoch(c), 4);
  c.swa_epoch_start = "0.05";
  EXPECT_EQ(swa_start_epoch(c), 0);
  for (const char* bad : {"0", "1.5", "x", "-2"}) {
    c.swa_epoch_start = bad;
    EXPECT_THROW(swa_start_epoch(c), std::invalid_argument) << bad;
  }
  c.swa_epoch_start = "11";
  c.swa_lrs = 0.01;
  EXPECT_THROW(c.validate(), std::invalid_argument);  // after the last epoch
  c.swa_epoch_start = "0.8";
  c.ema_decay = 0.9;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

// update_bn's statistics: after a reset, each training batch weighs 1/k, so the running mean is
// the mean of the batch means and the running variance the mean of the (unbiased) batch
// variances.
TEST(Swa, CumulativeBatchNormIsThePlainMeanOfTheBatches) {
  BatchNorm2d bn(3);
  bn.train();
  bn.reset_running_stats();
  bn.set_cumulative(true);
  tensor::Generator g(4);
  std::vector<double> mean_sum(3, 0), var_sum(3, 0);
  const int batches = 4;
  for (int k = 0; k < batches; ++k) {
    const Tensor x = Tensor::uniform({2, 3, 2, 3}, -1.0 + k, 2.0 + 2 * k, g);  // NHWC, 12 per channel
    const auto v = x.to_double_vector();
    for (int c = 0; c < 3; ++c) {
      double s = 0, sq = 0;
      for (size_t i = static_cast<size_t>(c); i < v.size(); i += 3) s += v[i];
      const double m = s / 12;
      for (size_t i = static_cast<size_t>(c); i < v.size(); i += 3) sq += (v[i] - m) * (v[i] - m);
      mean_sum[c] += m;
      var_sum[c] += sq / 11;
    }
    bn(autograd::Variable(x));
  }
  const auto bufs = bn.named_buffers();
  const auto rm = bufs[0].second->to_double_vector(), rv = bufs[1].second->to_double_vector();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], mean_sum[c] / batches, 1e-5) << c;
    EXPECT_NEAR(rv[c], var_sum[c] / batches, 1e-5) << c;
  }
  EXPECT_EQ(bufs[2].second->item(), batches);
}

// SWA from the 2nd of 4 epochs: the final weights are the mean of the weights at the ends of
// epochs 1, 2 and 3 (what epochs 2, 3 and 4 started from; --save-top-k -1 keeps each epoch's
// checkpoint). A run stopped at step 36 by --max-steps and resumed ends with the same weights.
TEST_F(TrainerTest, SwaAveragesTheEpochsAndResumesExactly) {
  Config c = four_epochs_sgd(0.05, 0.8);
  c.swa_lrs = 0.01;
  c.swa_epoch_start = "2";
  c.annealing_epochs = 2;
  c.save_top_k = -1;
  c.checkpoint_monitor = "val_loss";
  Trainer straight(c);
  const FitResult r = straight.fit();
  std::vector<std::vector<double>> mean;
  int files = 0;
  for (int e = 1; e <= 3; ++e) {
    std::string path;
    for (auto& f : fs::directory_iterator(r.version_dir + "/checkpoints"))
      if (f.path().filename().string().rfind("epoch=" + std::to_string(e) + "-", 0) == 0) path = f.path();
    ASSERT_FALSE(path.empty()) << "epoch " << e;
    Trainer probe(c);
    load_checkpoint(path, probe.model(), nullptr);
    const auto w = weights(probe);
    if (mean.empty()) mean.assign(w.size(), {});
    for (size_t i = 0; i < w.size(); ++i) {
      mean[i].resize(w[i].size());
      for (size_t k = 0; k < w[i].size(); ++k) mean[i][k] += w[i][k] / 3.0;
    }
    ++files;
  }
  ASSERT_EQ(files, 3);
  const auto got = weights(straight);
  for (size_t i = 0; i < got.size(); ++i)
    for (size_t k = 0; k < got[i].size(); ++k)
      ASSERT_NEAR(got[i][k], mean[i][k], 1e-6 * (1 + std::fabs(mean[i][k]))) << i << " " << k;
  const TrainState st = load_checkpoint(r.version_dir + "/checkpoints/last.h5", straight.model(), nullptr);
  EXPECT_TRUE(st.swa_done);
  EXPECT_EQ(st.swa_updates, 3);

  // Stopped at the end of epoch 2: SWA has begun (one update) but not ended.
  EXPECT_EQ(weights(straight), split_run_weights(c, [](Config& f) { f.max_steps = 36; }));
}

}  // namespace
}  // namespace mlai::nn
