// The trainer's mid-run checkpoints on a small synthetic MNIST-format set: every N steps and
// every T of wall time, so a run that dies without a signal resumes exactly from the last one;
// and a checkpoint that does not fit the model names what differs.
#include <gtest/gtest.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// --checkpoint-every-n-steps: a run that dies mid-epoch without a signal (MLAI_FAULT_RANK makes
// it throw at step 23: epoch 2, batch 5) leaves last.h5 from step 20 (epoch 2, batch 2), and
// resuming from it ends with the weights of a run that never died (dropout included: the
// generator's state is saved with the step).
TEST_F(TrainerTest, StepCheckpointsLetACrashedRunResumeExactly) {
  Config c = base();
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.dropout = 0.2;
  c.checkpoint_every_n_steps = 5;
  Trainer straight(c);
  EXPECT_EQ(straight.fit().global_step, 2 * 18);

  Config crash = c;
  crash.experiment_name = "crashed";
  const std::string ckpt = crash_at(crash, 23);
  ASSERT_FALSE(ckpt.empty());

  Config again = c;
  again.experiment_name = "crashed";
  again.resume = ckpt;
  Trainer resumed(again);
  const TrainState at = load_checkpoint(ckpt, resumed.model(), nullptr);
  EXPECT_EQ(at.global_step, 20);
  EXPECT_EQ(at.epoch, 1);
  EXPECT_EQ(at.next_batch, 2);
  EXPECT_EQ(resumed.fit().global_step, 2 * 18);
  EXPECT_EQ(weights(straight), weights(resumed));

  // With a validation at the same step (9), the step checkpoint is written after it and holds
  // its best score, so a resumed run cannot replace best.h5 with a worse model.
  Config both = c;
  both.checkpoint_every_n_steps = 9;
  both.val_check_interval = "0.5";
  both.experiment_name = "crashed-validated";
  const std::string ckpt2 = crash_at(both, 12);
  ASSERT_FALSE(ckpt2.empty());
  const TrainState at9 = load_checkpoint(ckpt2, resumed.model(), nullptr);
  EXPECT_EQ(at9.global_step, 9);
  EXPECT_GT(at9.best_score, 0.0);
}

// --optimizer lars and lamb through the trainer, in float32 and under --precision 16 (fp16
// gradients, the scaler's device inv_scale and skip flag): they learn the synthetic set, their
// state (momentum, moments) is in the checkpoint, so a run split in two ends with the weights
// of a straight one, and the step differs from SGD's/AdamW's (the trust ratios act).
TEST_F(TrainerTest, LarsAndLambTrainAndResumeExactly) {
  for (const char* opt : {"lars", "lamb"}) {
    for (const char* precision : {"32", "16"}) {
      SCOPED_TRACE(std::string(opt) + " precision " + precision);
      Config c = four_epochs_sgd(0.05, 0.7);
      c.optimizer = opt;
      c.precision = precision;
      c.lr = std::string(opt) == "lars" ? 2.0 : 0.02;
      c.trust_coefficient = 0.02;
      c.weight_decay = std::string(opt) == "lars" ? 5e-4 : 0.01;
      c.no_bias_decay = true;
      c.experiment_name = std::string(opt) + precision;
      Trainer straight(c);
      const FitResult r = straight.fit();
      EXPECT_GT(r.test.confusion.accuracy(), 0.9);
      const auto split = split_run_weights(c, [](Config& f) { f.epochs = 2; });
      EXPECT_EQ(split, weights(straight));

      Config plain = c;
      plain.optimizer = std::string(opt) == "lars" ? "sgd" : "adamw";
      plain.experiment_name += "-plain";
      Trainer other(plain);
      other.fit();
      EXPECT_NE(weights(other), weights(straight));
    }
  }
}

// --activation-checkpointing through the trainer: resnet20 trains to the same weights bit for
// bit (on the CPU), in float32 and under --precision 16 (the leaves are the fp16 working
// copies); and it is refused where it cannot apply.
TEST_F(TrainerTest, ActivationCheckpointingTrainsToTheSameWeights) {
  for (const char* precision : {"32", "16"}) {
    SCOPED_TRACE(precision);
    Config c = base();
    c.arch = "resnet20";
    c.epochs = 1;
    c.limit_train_batches = "6";
    c.limit_val_batches = "2";
    c.optimizer = "sgd";
    c.lr = 0.05;
    c.precision = precision;
    c.experiment_name = std::string("plain") + precision;
    Trainer plain(c);
    const FitResult rp = plain.fit();
    c.activation_checkpointing = true;
    c.experiment_name = std::string("ckpt") + precision;
    Trainer ckpt(c);
    const FitResult rc = ckpt.fit();
    EXPECT_EQ(weights(ckpt), weights(plain));
    // The model's FLOPs, without the recomputation's.
    EXPECT_GT(rp.flops_per_sample, 0);
    EXPECT_EQ(rc.flops_per_sample, rp.flops_per_sample);
  }
  Config mlp = base();
  mlp.activation_checkpointing = true;
  EXPECT_THROW(Trainer{mlp}, std::invalid_argument);  // no residual blocks
  Config graphs = base();
  graphs.activation_checkpointing = true;
  graphs.cuda_graphs = true;
  EXPECT_THROW(graphs.validate(), std::invalid_argument);
}

// --checkpoint-train-time-interval: last.h5 whenever that much wall time has passed since it was
// last written. At a millisecond every step is due, so a crash at step 23 leaves step 22's
// (epoch 2, batch 4), where the same run without it (and --checkpoint-every 0) leaves none; the
// epoch's end writes one when due too, so a crash at step 19 leaves step 18's (the whole first
// epoch, not step 17's). An hour's interval writes nothing in a run of seconds.
TEST_F(TrainerTest, TimedCheckpointsFollowTheWallClock) {
  Config c = base();
  c.checkpoint_every = 0;
  Config untimed = c;
  untimed.experiment_name = "untimed";
  EXPECT_TRUE(crash_at(untimed, 23).empty());
  Config hourly = c;
  hourly.experiment_name = "hourly";
  hourly.checkpoint_train_time_interval = "60";
  EXPECT_TRUE(crash_at(hourly, 23).empty());

  Config timed = c;
  timed.checkpoint_train_time_interval = "0:0.001";
  timed.experiment_name = "timed";
  const std::string mid = crash_at(timed, 23);
  ASSERT_FALSE(mid.empty());
  Trainer probe(c);
  const TrainState at = load_checkpoint(mid, probe.model(), nullptr);
  EXPECT_EQ(at.global_step, 22);
  EXPECT_EQ(at.epoch, 1);
  EXPECT_EQ(at.next_batch, 4);
  timed.experiment_name = "timed-epoch-end";
  const std::string end = crash_at(timed, 19);
  ASSERT_FALSE(end.empty());
  const TrainState at_end = load_checkpoint(end, probe.model(), nullptr);
  EXPECT_EQ(at_end.global_step, 18);
  EXPECT_EQ(at_end.epoch, 1);
  EXPECT_EQ(at_end.next_batch, 0);
  EXPECT_EQ(at_end.epoch_samples, 0);
}

TEST_F(TrainerTest, CheckpointMismatchListsNames) {
  Config c = base();
  c.epochs = 1;
  c.limit_train_batches = "1";
  const FitResult r = Trainer(c).fit();
  Config other = base();
  other.hidden = {64};
  other.resume = r.version_dir + "/checkpoints/last.h5";
  try {
    Trainer t(other);
    FAIL() << "expected a mismatch error";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unexpected: 5.bias, 5.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("mis-shaped: 1.weight"), std::string::npos) << m;
  }
}

// --save-weights-only (ModelCheckpoint(save_weights_only=True)): last.h5 and best.h5 hold the
// weights that a full checkpoint of the same run holds, without Adam's moments or the EMA's
// training weights (so much smaller); --pretrained and --test-ckpt start from them, and
// --resume is refused with the way to start from them.
TEST_F(TrainerTest, WeightsOnlyCheckpointsHoldTheWeightsAlone) {
  Config c = base();
  c.optimizer = "adam";
  c.lr = 0.002;
  c.ema_decay = 0.9;
  Config full = c;
  full.experiment_name = "full";
  c.save_weights_only = true;
  c.experiment_name = "weights";
  const std::string w_last = Trainer(c).fit().version_dir + "/checkpoints/last.h5";
  const std::string f_last = Trainer(full).fit().version_dir + "/checkpoints/last.h5";
  {
    const io::H5Reader w(w_last), f(f_last);
    EXPECT_FALSE(w.has("optimizer"));
    EXPECT_FALSE(w.has("current_model"));
    EXPECT_TRUE(f.has("optimizer"));
    EXPECT_TRUE(f.has("current_model"));
    ASSERT_EQ(w.list_datasets("model"), f.list_datasets("model"));
    for (const std::string& name : f.list_datasets("model")) {
      std::vector<float> a(static_cast<size_t>(f.info(name).numel())), b(a.size());
      w.read(name, io::H5Type::kFloat32, a.data(), static_cast<int64_t>(a.size()));
      f.read(name, io::H5Type::kFloat32, b.data(), static_cast<int64_t>(b.size()));
      EXPECT_EQ(a, b) << name;
    }
    EXPECT_EQ(w.get_attr_int("/", "global_step"), f.get_attr_int("/", "global_step"));
  }
  EXPECT_LT(fs::file_size(w_last) * 3, fs::file_size(f_last));  // weights, 2 moments, EMA's
  EXPECT_TRUE(fs::exists(fs::path(w_last).parent_path() / "best.h5"));

  Config again = c;
  again.resume = w_last;
  try {
    Trainer t(again);
    t.fit();
    ADD_FAILURE() << "resumed from a weights-only checkpoint";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--pretrained " + w_last), std::string::npos) << e.what();
  }
  Config from = full;
  from.experiment_name = "from-weights";
  from.pretrained = w_last;
  from.epochs = 1;
  EXPECT_GT(Trainer(from).fit().test.confusion.accuracy(), 0.9);
}

}  // namespace
}  // namespace mlai::nn
