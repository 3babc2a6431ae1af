// Lightning's EarlyStopping on the trainer, on the small synthetic MNIST-format set: patience
// counted in validations (within epochs too), the stopping and divergence thresholds, and the
// stop on a value that is not finite.
#include <gtest/gtest.h>

#include <cmath>

#include "nn/checkpoint.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

// Lightning's EarlyStopping: with an improvement threshold no epoch can meet, training stops
// after the first epoch plus `patience`, saves last.h5 there (with the early-stopping state),
// and still tests.
TEST_F(TrainerTest, EarlyStoppingEndsTrainingAfterPatienceEpochs) {
  Config c = base();
  c.epochs = 10;
  c.early_stopping_patience = 2;
  c.early_stopping_monitor = "val_accuracy";
  c.early_stopping_min_delta = 1.0;  // accuracy cannot rise by more than 1
  c.checkpoint_every = 0;            // last.h5 "only at the end": an early end is one
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_TRUE(r.early_stopped);
  EXPECT_EQ(r.epochs_completed, 3);
  EXPECT_EQ(r.global_step, 3 * 18);
  EXPECT_GT(r.test.samples, 0);
  const TrainState st = load_checkpoint(r.version_dir + "/checkpoints/last.h5", t.model(), nullptr);
  EXPECT_EQ(st.epoch, 3);
  EXPECT_EQ(st.early_stopping_wait, 2);
  EXPECT_GT(st.early_stopping_best, 0.0);  // epoch 1's validation accuracy
  EXPECT_LE(st.early_stopping_best, 1.0);
  // A reachable threshold on a learnable set: val_loss keeps falling, no early stop in 3 epochs.
  Config d = base();
  d.epochs = 3;
  d.early_stopping_patience = 1;
  d.experiment_name = "improving";
  const FitResult r2 = Trainer(d).fit();
  EXPECT_FALSE(r2.early_stopped);
  EXPECT_EQ(r2.epochs_completed, 3);
  // Without a validation set there is nothing to monitor: a clear error.
  Config e = base();
  e.early_stopping_patience = 1;
  e.val_split = 0;
  EXPECT_THROW(e.validate(), std::invalid_argument);
}

// EarlyStopping's thresholds and check_finite: a stopping threshold ends training at the first
// validation better than it (four validations an epoch here), a divergence threshold at the
// first worse, and while early stopping is on a value that is not finite ends it at once (a
// diverged run; before, a NaN first value became the "best" and nothing ever stopped).
TEST_F(TrainerTest, EarlyStoppingThresholdsAndNonFiniteValues) {
  Config c = base();
  c.epochs = 10;
  c.val_check_interval = "0.25";
  c.lr = 2e-5;  // slow enough that a few validations come before the threshold
  c.early_stopping_monitor = "val_accuracy";
  c.early_stopping_stopping_threshold = "0.6";
  const FitResult r = Trainer(c).fit();
  EXPECT_TRUE(r.early_stopped);
  // Every validation before the stop's step is at or below the threshold; the stop's is above.
  const auto acc = scalar_values(r.version_dir, "val/accuracy");
  const auto at = scalar_steps(r.version_dir, "val/accuracy");
  ASSERT_EQ(acc.size(), at.size());
  int before = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    if (at[i] < r.global_step) {
      EXPECT_LE(acc[i], 0.6f) << "validation at step " << at[i];
      ++before;
    } else {
      EXPECT_GT(acc[i], 0.6f) << "validation at step " << at[i];
    }
  }
  EXPECT_GE(before, 2);  // the rule was tested on a few validations

  Config d = base();
  d.epochs = 3;
  d.experiment_name = "diverging";
  d.early_stopping_stopping_threshold = "0";     // val_loss < 0: never
  d.early_stopping_divergence_threshold = "0";   // val_loss > 0: at the first validation
  const FitResult r2 = Trainer(d).fit();
  EXPECT_TRUE(r2.early_stopped);
  EXPECT_EQ(r2.epochs_completed, 1);

  Config e = base();
  e.epochs = 4;
  e.experiment_name = "nan";
  e.optimizer = "sgd";
  e.lr = 1e12;  // the weights blow up in the first steps
  e.early_stopping_patience = 3;
  const FitResult r3 = Trainer(e).fit();
  EXPECT_FALSE(std::isfinite(r3.val.loss));
  EXPECT_TRUE(r3.early_stopped);
  EXPECT_EQ(r3.epochs_completed, 1);

  Config bad = base();
  bad.early_stopping_stopping_threshold = "high";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = base();
  bad.early_stopping_divergence_threshold = "2";
  bad.val_split = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// Lightning checks EarlyStopping after every validation: with --val-check-interval 0.5 the
// validations come at steps 9, 18, 27, so patience 2 ends training at step 27, within epoch 2,
// and last.h5 resumes there.
TEST_F(TrainerTest, EarlyStoppingCountsValidationsWithinEpochs) {
  Config c = base();
  c.epochs = 5;
  c.val_check_interval = "0.5";
  c.early_stopping_patience = 2;
  c.early_stopping_monitor = "val_accuracy";
  c.early_stopping_min_delta = 1.0;
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_TRUE(r.early_stopped);
  EXPECT_EQ(r.global_step, 27);
  EXPECT_EQ(r.epochs_completed, 1);
  EXPECT_GT(r.val.samples, 0);
  EXPECT_GT(r.test.samples, 0);
  const TrainState st = load_checkpoint(r.version_dir + "/checkpoints/last.h5", t.model(), nullptr);
  EXPECT_EQ(st.epoch, 1);
  EXPECT_EQ(st.next_batch, 9);
  EXPECT_EQ(st.global_step, 27);
  EXPECT_EQ(st.early_stopping_wait, 2);
}

// Lightning's min_epochs / min_steps: the early stop the first test gets after 3 epochs is put
// off to the end of epoch 5 (--min-epochs 5), or to step 80, within epoch 5 (--min-steps 80);
// a run that a limit ends while the stop waits keeps it in last.h5; bad values are refused.
TEST_F(TrainerTest, MinEpochsAndMinStepsPutEarlyStoppingOff) {
  Config c = base();
  c.epochs = 10;
  c.early_stopping_patience = 2;
  c.early_stopping_monitor = "val_accuracy";
  c.early_stopping_min_delta = 1.0;  // never an improvement: asks to stop after epoch 3
  Config a = c;
  a.min_epochs = 5;
  a.experiment_name = "min-epochs";
  const FitResult ra = Trainer(a).fit();
  EXPECT_TRUE(ra.early_stopped);
  EXPECT_EQ(ra.epochs_completed, 5);
  EXPECT_EQ(ra.global_step, 5 * 18);
  EXPECT_GT(ra.test.samples, 0);

  Config b = c;
  b.min_steps = 80;
  b.experiment_name = "min-steps";
  const FitResult rb = Trainer(b).fit();
  EXPECT_TRUE(rb.early_stopped);
  EXPECT_EQ(rb.global_step, 80);
  EXPECT_EQ(rb.epochs_completed, 4);

  Config d = c;
  d.min_epochs = 5;
  d.max_steps = 70;  // within epoch 4: the stop is still waiting
  d.experiment_name = "limited";
  Trainer td(d);
  const FitResult rd = td.fit();
  EXPECT_FALSE(rd.early_stopped);
  EXPECT_EQ(rd.global_step, 70);
  const TrainState st =
      load_checkpoint(rd.version_dir + "/checkpoints/last.h5", td.model(), nullptr);
  EXPECT_TRUE(st.early_stopping_pending);
  EXPECT_EQ(st.global_step, 70);

  Config bad = base();
  bad.epochs = 3;
  bad.min_epochs = 4;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = base();
  bad.min_steps = -1;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = base();
  bad.max_steps = 10;
  bad.min_steps = 11;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
