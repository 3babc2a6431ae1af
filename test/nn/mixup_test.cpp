// --mixup-alpha / --cutmix-alpha: the Beta draws, the per-batch choice and box, the mixed loss
// (its value against the soft-target formula, its gradient by finite differences in float64),
// and training with mixing: it learns, and a run split in two ends as one straight run; the
// same for --random-erasing.
#include "nn/mixup.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/fused_ops.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

// Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)); 20000 draws of a fixed stream.
TEST(Mixup, BetaDrawsHaveBetasMeanAndVariance) {
  for (double a : {0.2, 1.0, 2.5}) {
    uint64_t counter = 0;
    const int n = 20000;
    double sum = 0, sq = 0;
    for (int i = 0; i < n; ++i) {
      const double v = sample_beta(a, 99, &counter);
      ASSERT_GE(v, 0.0);
      ASSERT_LE(v, 1.0);
      sum += v;
      sq += v * v;
    }
    const double mean = sum / n, var = sq / n - mean * mean;
    const double want_var = 1.0 / (4.0 * (2.0 * a + 1.0));
    EXPECT_NEAR(mean, 0.5, 0.01) << "alpha " << a;
    EXPECT_NEAR(var, want_var, 0.05 * want_var) << "alpha " << a;
  }
  uint64_t c1 = 5, c2 = 5;
  EXPECT_EQ(sample_beta(0.4, 3, &c1), sample_beta(0.4, 3, &c2));  // a function of its stream
}

TEST(Mixup, DrawsChooseEvenlyAndCutMixBoxesFitTheImage) {
  MixConfig both{0.2, 1.0};
  int cuts = 0;
  for (int64_t b = 0; b < 2000; ++b) {
    const kernels::MixParams p = draw_mix(both, 42, 0, 3, b, 64, 32, 24, 3);
    EXPECT_EQ(p.batch, 64);
    if (!p.cut) {
      EXPECT_GE(p.lambda, 0.0f);
      EXPECT_LE(p.lambda, 1.0f);
      continue;
    }
    ++cuts;
    ASSERT_LE(0, p.y1);
    ASSERT_LE(p.y1, p.y2);
    ASSERT_LE(p.y2, 32);
    ASSERT_LE(0, p.x1);
    ASSERT_LE(p.x1, p.x2);
    ASSERT_LE(p.x2, 24);
    // lambda is what the clipped box leaves of each sample's own pixels
    EXPECT_FLOAT_EQ(p.lambda, 1.0f - static_cast<float>((p.y2 - p.y1) * (p.x2 - p.x1)) / (32 * 24));
  }
  EXPECT_NEAR(cuts, 1000, 100);
  // The same (seed, rank, epoch, batch), the same draw; another rank or batch, another.
  const auto a = draw_mix(both, 42, 0, 3, 17, 64, 32, 24, 3);
  const auto same = draw_mix(both, 42, 0, 3, 17, 64, 32, 24, 3);
  EXPECT_EQ(a.lambda, same.lambda);
  EXPECT_EQ(a.x1, same.x1);
  EXPECT_NE(a.lambda, draw_mix(both, 42, 1, 3, 17, 64, 32, 24, 3).lambda);
  EXPECT_NE(a.lambda, draw_mix(both, 42, 0, 3, 18, 64, 32, 24, 3).lambda);
  // MixUp alone never cuts; CutMix alone always does.
  EXPECT_FALSE(draw_mix(MixConfig{0.2, 0}, 1, 0, 0, 0, 8, 8, 8, 1).cut);
  EXPECT_TRUE(draw_mix(MixConfig{0, 1.0}, 1, 0, 0, 0, 8, 8, 8, 1).cut);
}

// The loss equals cross-entropy against the mixed (and smoothed) one-hot targets computed by
// hand, and its gradient passes the float64 finite-difference check.
TEST(Mixup, MixedCrossEntropyIsTheSoftTargetLossAndGradchecks) {
  tensor::Generator g(5);
  const int64_t rows = 4, classes = 5;
  const Tensor logits = Tensor::uniform({rows, classes}, -2, 2, g, DType::kFloat64);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 3, 3, 1}, {rows});
  const Tensor rolled = tensor::roll_rows(labels);
  const std::vector<int64_t> lab = labels.to_vector<int64_t>(), rol = rolled.to_vector<int64_t>();
  const auto z = logits.to_vector<double>();
  for (double lam : {0.3, 0.8}) {
    for (double eps : {0.0, 0.1}) {
      double want = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double mx = -1e300, se = 0;
        for (int64_t k = 0; k < classes; ++k) mx = std::max(mx, z[r * classes + k]);
        for (int64_t k = 0; k < classes; ++k) se += std::exp(z[r * classes + k] - mx);
        for (int64_t k = 0; k < classes; ++k) {
          const double logp = z[r * classes + k] - mx - std::log(se);
          double target = lam * (k == lab[r]) + (1 - lam) * (k == rol[r]);
          target = target * (1 - eps) + eps / classes;
          want -= target * logp;
        }
      }
      want /= rows;
      const autograd::Variable v(logits);
      EXPECT_NEAR(mixed_cross_entropy(v, labels, rolled, lam, eps).data().item(), want, 1e-12);
      const auto r = autograd::gradcheck(
          [&](const std::vector<autograd::Variable>& in) {
            return mixed_cross_entropy(in[0], labels, rolled, lam, eps);
          },
          {logits});
      EXPECT_TRUE(r.ok) << r.message;
    }
  }
}

// A batch augmentation switched on in `c` still learns the synthetic set; a run split in two
// (2 epochs, then resumed for 2 more) ends with the same weights as one straight run (its
// draws depend on the seed, epoch and sample or batch only); and the same run with `off`
// applied (the augmentation switched off) ends elsewhere.
class AugmentTrainerTest : public TrainerTest {
 protected:
  void expect_trains_resumes_and_changes(const Config& c, const std::function<void(Config&)>& off) {
    Trainer straight(c);
    const FitResult r = straight.fit();
    EXPECT_GT(r.val.confusion.accuracy(), 0.9);
    EXPECT_EQ(weights(straight), split_run_weights(c, [](Config& f) { f.epochs = 2; }));
    Config plain = c;
    off(plain);
    plain.experiment_name = "plain";
    Trainer without(plain);
    without.fit();
    EXPECT_NE(weights(without), weights(straight));
  }
};

// MixUp or CutMix (evenly).
TEST_F(AugmentTrainerTest, MixingTrainsAndResumesExactly) {
  Config c = four_epochs_sgd(0.05, 0.7);
  c.mixup_alpha = 0.2;
  c.cutmix_alpha = 1.0;
  expect_trains_resumes_and_changes(c, [](Config& f) { f.mixup_alpha = f.cutmix_alpha = 0; });

  Config bad = base();
  bad.mixup_alpha = -1;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.mixup_alpha = 0.2;
  bad.cuda_graphs = true;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --random-erasing.
TEST_F(AugmentTrainerTest, RandomErasingTrainsAndResumesExactly) {
  Config c = four_epochs_sgd(0.05, 0.7);
  c.random_erasing = 0.5;
  expect_trains_resumes_and_changes(c, [](Config& f) { f.random_erasing = 0; });

  Config bad = base();
  bad.random_erasing = 1.5;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.random_erasing = 0.5;
  bad.erasing_scale = {0.3, 0.1};
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.erasing_scale = {0.02, 0.33};
  bad.erasing_ratio = {0, 3.3};
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --auto-augment: RandAugment at a middling magnitude (the synthetic set's small images still
// learn) and AugMix, and the flags' checks.
TEST_F(AugmentTrainerTest, AutoAugmentTrainsAndResumesExactly) {
  Config c = four_epochs_sgd(0.05, 0.7);
  c.auto_augment = "ra";
  c.ra_magnitude = 5;
  expect_trains_resumes_and_changes(c, [](Config& f) { f.auto_augment = "none"; });
  c.auto_augment = "augmix";
  c.experiment_name = "augmix";
  expect_trains_resumes_and_changes(c, [](Config& f) { f.auto_augment = "none"; });

  Config bad = base();
  bad.auto_augment = "autoaugment";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.auto_augment = "ra";
  bad.ra_magnitude = 31;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.ra_magnitude = 9;
  bad.ra_num_ops = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.ra_num_ops = 2;
  bad.augmix_severity = 11;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
