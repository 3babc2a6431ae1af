// The trainer end to end on a small synthetic MNIST-format set: it learns, overfits two
// batches, resumes bit-exactly (after whole epochs, after a signal mid-epoch) and with another
// batch size, clips and accumulates gradients, captures CUDA graphs, validates a checkpoint, and
// leaves the experiment files behind. Lightning's callbacks and limits are in
// trainer_callbacks_test.cpp; mid-run checkpoints in trainer_checkpoint_test.cpp.
#include "nn/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/checkpoint.h"
#include "nn/experiment.h"
#include "tensor/device.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

TEST_F(TrainerTest, LearnsAndWritesTheExperimentFiles) {
  Config c = base();
  c.epochs = 3;
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_GT(r.test.confusion.accuracy(), 0.9);
  EXPECT_LT(r.last_train_loss, 0.5);
  EXPECT_EQ(r.global_step, 3 * 18);  // 576 training images (10% held out) / 32
  for (const char* f :
       {"hparams.json", "config.yaml", "metrics.csv", "checkpoints/last.h5", "checkpoints/best.h5"})
    EXPECT_TRUE(fs::exists(r.version_dir + "/" + f)) << f;
  bool events = false;
  for (auto& e : fs::directory_iterator(r.version_dir))
    events |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(events);
  std::ifstream csv(r.version_dir + "/metrics.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 1 + 3 + 1);  // header, 3 epochs, the test row
  // A second run gets the next version directory.
  Config c2 = base();
  c2.epochs = 1;
  c2.limit_train_batches = "2";
  EXPECT_NE(Trainer(c2).fit().version_dir, r.version_dir);
}

TEST_F(TrainerTest, OverfitsTwoBatches) {
  Config c = base();
  c.overfit_batches = 2;
  c.epochs = 60;
  c.lr_schedule = "constant";
  c.checkpoint_every = 0;
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_LT(r.last_train_loss, 0.01);
  EXPECT_EQ(r.val.samples, 64);
  EXPECT_DOUBLE_EQ(r.val.confusion.accuracy(), 1.0);
}

TEST_F(TrainerTest, ResumeAfterWholeEpochsIsBitIdentical) {
  Config c = base();
  c.epochs = 4;
  c.dropout = 0.2;  // exercises the saved generator state
  // The schedule's horizon is the run's own --epochs, so "2 then 2 more" matches "4" exactly
  // with a schedule that does not depend on it (the signal test covers cosine).
  c.lr_schedule = "step";
  c.lr_step_epochs = 1;
  c.lr_gamma = 0.5;
  c.optimizer = "adamw";
  c.weight_decay = 0.01;
  Trainer straight(c);
  straight.fit();
  EXPECT_EQ(weights(straight), split_run_weights(c, [](Config& f) { f.epochs = 2; }));
}

TEST_F(TrainerTest, StopsOnASignalWithACheckpointAndResumesMidEpochExactly) {
  Config c = base();
  c.epochs = 2;
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.nesterov = true;
  Trainer straight(c);
  straight.fit();

  install_stop_handlers();
  Config first = c;
  first.experiment_name = "stopped";
  Trainer stopped(first);
  std::raise(SIGUSR1);  // arrives before the first step: the trainer stops after one step
  const FitResult r1 = stopped.fit();
  EXPECT_EQ(r1.stop_signal, SIGUSR1);
  EXPECT_EQ(r1.global_step, 1);
  const std::string ckpt = r1.version_dir + "/checkpoints/last.h5";
  ASSERT_TRUE(fs::exists(ckpt));
  std::signal(SIGUSR1, SIG_DFL);
  Config second = c;
  second.experiment_name = "stopped";
  second.resume = ckpt;
  Trainer resumed(second);
  const FitResult r2 = resumed.fit();
  EXPECT_EQ(r2.stop_signal, 0);
  EXPECT_EQ(r2.global_step, 2 * 18);
  EXPECT_EQ(weights(straight), weights(resumed));
}

// --validate-only (trainer.validate): a checkpoint's weights on the validation split give the
// run's own last validation, logged as a "validate" row; another seed draws another split.
TEST_F(TrainerTest, ValidateOnlyRepeatsTheRunsLastValidation) {
  Config c = base();
  c.epochs = 2;
  const FitResult r = Trainer(c).fit();
  ASSERT_GT(r.val.samples, 0);
  Config v = base();
  v.validate_only = true;
  v.test_ckpt = r.version_dir + "/checkpoints/last.h5";
  const FitResult rv = Trainer(v).fit();
  EXPECT_EQ(rv.global_step, 0);
  EXPECT_EQ(rv.test.samples, 0);
  EXPECT_EQ(rv.val.samples, r.val.samples);
  EXPECT_EQ(rv.val.loss, r.val.loss);
  EXPECT_EQ(rv.val.confusion.accuracy(), r.val.confusion.accuracy());
  const std::vector<std::string> rows = metrics_rows(rv.version_dir);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].rfind("validate,", 0), 0u) << rows[1];
  v.seed = 7;
  EXPECT_NE(Trainer(v).fit().val.loss, r.val.loss);
}

TEST_F(TrainerTest, FastDevRunWritesNothing) {
  Config c = base();
  c.fast_dev_run = 2;
  const FitResult r = Trainer(c).fit();
  EXPECT_EQ(r.global_step, 2);
  EXPECT_TRUE(r.version_dir.empty());
  EXPECT_FALSE(fs::exists(root + "/logs"));
  EXPECT_EQ(r.test.samples, 64);
}

// Lightning's gradient clipping, both algorithms, in fp32 and fp16: training still learns.
TEST_F(TrainerTest, GradientClippingStillLearns) {
  for (const char* algorithm : {"norm", "value"}) {
    for (const char* precision : {"32", "16"}) {
      SCOPED_TRACE(std::string(algorithm) + " " + precision);
      Config c = base();
      c.epochs = 3;
      c.gradient_clip_val = 0.5;
      c.gradient_clip_algorithm = algorithm;
      c.precision = precision;
      c.experiment_name = std::string("clip-") + algorithm + precision;
      const FitResult r = Trainer(c).fit();
      EXPECT_GT(r.test.confusion.accuracy(), 0.9);
    }
  }
}

// Lightning's accumulate_grad_batches: 4 batches of 8, each loss divided by 4, summed into one
// step, train like batches of 32 (the loader's shuffle does not depend on the batch size, and
// the mlp has no batch statistics); the schedule counts optimizer steps. In float32 only the
// summation order differs. In fp16 the working gradients are rounded once per batch instead of
// once per step: accumulation may move the weights by no more than fp16 itself does (fp16 vs
// float32 without accumulation).
TEST_F(TrainerTest, AccumulatingFourBatchesStepsLikeOneBatchFourTimesLarger) {
  auto rel_diff = [](const std::vector<std::vector<float>>& a,
                     const std::vector<std::vector<float>>& b) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < b.size(); ++i)
      for (size_t j = 0; j < b[i].size(); ++j) {
        diff = std::max(diff, static_cast<double>(std::fabs(a.at(i).at(j) - b[i][j])));
        scale = std::max(scale, static_cast<double>(std::fabs(b[i][j])));
      }
    return diff / scale;
  };
  std::vector<std::vector<float>> fp32_big;
  for (const char* precision : {"32", "16"}) {
    SCOPED_TRACE(std::string("--precision ") + precision);
    Config big = base();
    big.optimizer = "sgd";
    big.momentum = 0.9;
    big.lr = 0.05;
    big.lr_schedule = "cosine";
    big.precision = precision;
    big.experiment_name = std::string("big") + precision;
    Trainer one(big);
    const FitResult r1 = one.fit();
    Config small = big;
    small.batch_size = 8;
    small.accumulate_grad_batches = 4;
    small.experiment_name = std::string("accumulated") + precision;
    Trainer four(small);
    const FitResult r4 = four.fit();
    EXPECT_EQ(r1.global_step, 2 * 18);
    EXPECT_EQ(r4.global_step, 2 * 18);  // 72 batches of 8 per epoch, a step every 4
    const double d = rel_diff(weights(four), weights(one));
    if (std::string(precision) == "32") {
      EXPECT_LT(d, 1e-5);
      fp32_big = weights(one);
    } else {
      const double fp16_noise = rel_diff(weights(one), fp32_big);
      EXPECT_GT(fp16_noise, 0.0);
      EXPECT_LT(d, fp16_noise) << "fp16 vs float32 moves the weights by " << fp16_noise;
    }
    EXPECT_NEAR(r4.test.confusion.accuracy(), r1.test.confusion.accuracy(), 0.02);
  }
}

// An epoch's last, shorter group still steps (as Lightning does), and a signal stops only at a
// step: the checkpoint never holds half-accumulated gradients, and resuming from it ends with
// the weights of a run that was never stopped.
TEST_F(TrainerTest, AccumulationStepsAtTheEpochsEndAndStopsOnlyBetweenSteps) {
  Config c = base();
  c.accumulate_grad_batches = 4;  // 18 batches per epoch: groups of 4, 4, 4, 4 and 2
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.lr = 0.05;
  Trainer straight(c);
  const FitResult r = straight.fit();
  EXPECT_EQ(r.global_step, 2 * 5);
  EXPECT_GT(r.test.confusion.accuracy(), 0.5);

  install_stop_handlers();
  Config first = c;
  first.experiment_name = "stopped";
  Trainer stopped(first);
  std::raise(SIGUSR1);  // pending from the start: honoured after the first optimizer step
  const FitResult r1 = stopped.fit();
  std::signal(SIGUSR1, SIG_DFL);
  EXPECT_EQ(r1.stop_signal, SIGUSR1);
  EXPECT_EQ(r1.global_step, 1);
  const std::string ckpt = r1.version_dir + "/checkpoints/last.h5";
  ASSERT_TRUE(fs::exists(ckpt));
  Config second = c;
  second.experiment_name = "stopped";
  second.resume = ckpt;
  Trainer resumed(second);
  EXPECT_EQ(load_checkpoint(ckpt, resumed.model(), nullptr).next_batch, 4);  // a group's end
  EXPECT_EQ(resumed.fit().global_step, 2 * 5);
  EXPECT_EQ(weights(straight), weights(resumed));
  // Another accumulation count goes on from the same sample (128: batch 4 of 18) in groups of
  // 2: the schedule's step 2 (not 1), 7 steps to the epoch's end, then 9.
  Config other = second;
  other.accumulate_grad_batches = 2;
  other.experiment_name = "regrouped";
  Trainer regrouped(other);
  EXPECT_EQ(regrouped.fit().global_step, 1 + 7 + 9);
  const auto shifted = find_last_checkpoint(c.log_dir, "regrouped");
  EXPECT_EQ(load_checkpoint(shifted, regrouped.model(), nullptr).schedule_shift, 1);

  Config bad = base();
  bad.accumulate_grad_batches = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.accumulate_grad_batches = 2;
  bad.cuda_graphs = true;
  try {
    bad.validate();
    FAIL() << "--cuda-graphs with accumulation was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--accumulate-grad-batches"), std::string::npos)
        << e.what();
  }
}

// --cuda-graphs: a clear error on the CPU and with dropout (its masks would repeat), before
// any training.
TEST_F(TrainerTest, CudaGraphsRefusesWhatItCannotCapture) {
  Config c = base();
  c.cuda_graphs = true;
  try {
    Trainer t(c);
    FAIL() << "--cuda-graphs on the CPU was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--cuda-graphs needs --device cuda"), std::string::npos)
        << e.what();
  }
  c.dropout = 0.1;
  try {
    c.validate();
    FAIL() << "--cuda-graphs with dropout was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--dropout"), std::string::npos) << e.what();
  }
}

// On a GPU: training with the whole step (optimizer included) replayed from a CUDA graph ends
// with the weights, buffers and metrics of eager training (mlp and resnet18_cifar, fp32 and
// fp16, Adam and, for the mlp, SGD with momentum; the cosine schedule changes the rate every
// step; the epoch's last batch is smaller, so graphed and eager steps alternate too).
// Deterministic algorithms, so the two runs pick the same kernels.
TEST_F(TrainerTest, CudaGraphsTrainLikeEagerSteps) {
  if (!tensor::cuda_available())
    GTEST_SKIP() << "no CUDA device: " << tensor::cuda_unavailable_reason();
  for (const char* arch : {"mlp", "resnet18_cifar"})
    for (const char* precision : {"32", "16"})
      for (const char* optimizer : {"adam", "sgd"}) {
        if (std::string(optimizer) == "sgd" && std::string(arch) != "mlp") continue;
        SCOPED_TRACE(std::string(arch) + " " + precision + " " + optimizer);
        Config c = base();
        c.device = "cuda";
        c.arch = arch;
        c.precision = precision;
        c.optimizer = optimizer;
        if (c.optimizer == "sgd") c.lr = 0.05;
        c.deterministic = true;
        c.epochs = 2;
        c.batch_size = 50;  // not a divisor of the training set: a last, smaller batch each epoch
        c.limit_val_batches = "2";
        c.experiment_name = std::string("eager-") + arch + precision + optimizer;
        Trainer eager(c);
        const FitResult re = eager.fit();
        c.cuda_graphs = true;
        c.experiment_name = std::string("graphs-") + arch + precision + optimizer;
        Trainer graphed(c);
        const FitResult rg = graphed.fit();
        const auto we = weights(eager), wg = weights(graphed);
        ASSERT_EQ(we.size(), wg.size());
        for (size_t i = 0; i < we.size(); ++i) {
          double scale = 1e-30, err = 0;
          for (size_t j = 0; j < we[i].size(); ++j) {
            scale = std::max(scale, static_cast<double>(std::abs(we[i][j])));
            err = std::max(err, static_cast<double>(std::abs(we[i][j] - wg[i][j])));
          }
          EXPECT_LE(err / scale, 1e-3) << "parameter " << i;
        }
        // Running statistics to float tolerance (cuDNN may time its way to other deterministic
        // convolution algorithms in the second run); num_batches_tracked exactly.
        auto be = eager.model().named_buffers(), bg = graphed.model().named_buffers();
        for (size_t i = 0; i < be.size(); ++i) {
          const auto e = be[i].second->to_double_vector(), g = bg[i].second->to_double_vector();
          for (size_t j = 0; j < e.size(); ++j)
            EXPECT_NEAR(e[j], g[j], 1e-3 * (1 + std::abs(e[j]))) << be[i].first;
        }
        EXPECT_NEAR(re.test.confusion.accuracy(), rg.test.confusion.accuracy(), 0.02);
        // Both learned. ResNet's 24 steps fit the training batches (loss 0.003) while its
        // batch-norm running statistics still lag the weights, so in eval mode it predicts one
        // class on this set, eagerly and graphed alike and on the CPU too (seen on the first GPU
        // run, an H200, and reproduced on the CPU): its check is the training loss.
        if (std::string(arch) == "mlp")
          EXPECT_GT(rg.test.confusion.accuracy(), 0.5);
        else
          EXPECT_LT(rg.last_train_loss, 0.5);
      }
}

// --resume last (Lightning's ckpt_path="last"): the experiment's newest last.h5, here one a
// --max-steps run left mid-epoch, continues exactly; with none yet the run starts afresh.
TEST_F(TrainerTest, ResumeLastContinuesTheExperimentsNewestCheckpoint) {
  Config c = four_epochs_sgd(0.05, 0.5);
  c.experiment_name = "straight";
  Trainer straight(c);
  straight.fit();
  const auto want = weights(straight);
  c.experiment_name = "auto";
  Config first = c;
  first.max_steps = 30;  // within epoch 2
  const FitResult r1 = Trainer(first).fit();
  EXPECT_EQ(find_last_checkpoint(c.log_dir, "auto"), r1.version_dir + "/checkpoints/last.h5");
  Config again = c;
  again.resume = "last";
  Trainer resumed(again);
  const FitResult r2 = resumed.fit();
  EXPECT_EQ(weights(resumed), want);
  EXPECT_EQ(r2.global_step, 4 * 18);
  // The newest now is the resumed run's own (a new version folder).
  EXPECT_EQ(find_last_checkpoint(c.log_dir, "auto"), r2.version_dir + "/checkpoints/last.h5");
  Config fresh = c;
  fresh.experiment_name = "nothing-yet";
  fresh.resume = "last";
  Trainer t(fresh);
  t.fit();
  EXPECT_EQ(weights(t), want);
}

// Resumed with another batch size (as on another number of ranks: test/dist): the epoch goes
// on with the samples its checkpoint had not trained on, and the learning-rate schedule from
// the same point of training, counted in the new run's steps.
TEST_F(TrainerTest, ResumeWithAnotherBatchSizeContinuesTheEpochAndTheSchedule) {
  Config c = base();
  c.batch_size = 16;  // 576 training images: 36 steps an epoch
  c.optimizer = "sgd";
  c.lr = 0.1;
  c.lr_schedule = "cosine";
  c.checkpoint_every_n_steps = 7;
  c.experiment_name = "reshaped";
  const std::string ckpt = crash_at(c, 9);
  ASSERT_FALSE(ckpt.empty());
  Config again = c;
  again.batch_size = 24;  // 24 steps an epoch
  again.resume = ckpt;
  again.checkpoint_every_n_steps = 0;
  again.log_every_n_steps = 1;
  Trainer resumed(again);
  const TrainState at = load_checkpoint(ckpt, resumed.model(), nullptr);
  EXPECT_EQ(at.global_step, 7);
  EXPECT_EQ(at.epoch_samples, 7 * 16);
  EXPECT_EQ(at.world, 1);
  const FitResult r = resumed.fit();
  // 576 - 112 = 464 samples left of epoch 1: 20 batches of 24 (numbered 4..23), then 24.
  EXPECT_EQ(r.global_step, 7 + 20 + 24);
  // The schedule's step is the one a run with batch 24 throughout has at the same batch:
  // global_step - 3 (batch 4 of epoch 1 is step 4, not 7), ending at the horizon's last.
  ScheduleConfig sc;
  sc.name = "cosine";
  sc.base_lr = 0.1;
  sc.total_steps = 2 * 24;
  const auto steps = scalar_steps(r.version_dir, "train/lr_step");
  const auto lrs = scalar_values(r.version_dir, "train/lr_step");
  ASSERT_EQ(steps.size(), 44u);
  for (size_t k = 0; k < steps.size(); ++k) {
    EXPECT_EQ(steps[k], static_cast<int64_t>(8 + k));
    // The rate logged at step g is the one step g - 1 used.
    EXPECT_NEAR(lrs[k], lr_at(sc, steps[k] - 1 - 3), 1e-6 * 0.1) << "step " << steps[k];
  }
  // A checkpoint of the resumed run records its own geometry and keeps the re-anchoring.
  const TrainState end =
      load_checkpoint(r.version_dir + "/checkpoints/last.h5", resumed.model(), nullptr);
  EXPECT_EQ(end.schedule_shift, -3);
  EXPECT_EQ(end.epoch_samples, 0);
  EXPECT_EQ(end.epoch, 2);
  EXPECT_GT(r.test.confusion.accuracy(), 0.5);
}

// --lr-schedule multistep (MultiStepLR, stepped each epoch): the rate halves once epochs 1 and
// 3 (from 0) begin, as metrics.csv's per-epoch rate shows, and a run split at epoch 2 ends
// with the same weights.
TEST_F(TrainerTest, MultiStepScheduleDecaysAtTheMilestones) {
  Config c = four_epochs_sgd(0.08, 0.5);
  c.lr_schedule = "multistep";
  c.lr_milestones = {1, 3};
  Trainer straight(c);
  const FitResult r = straight.fit();
  const std::vector<std::string> rows = metrics_rows(r.version_dir);
  ASSERT_FALSE(rows.empty());
  ASSERT_EQ(rows[0].rfind("epoch,", 0), 0u) << rows[0];
  std::vector<double> lrs;
  for (size_t i = 1; i < rows.size() && rows[i].rfind("test,", 0) != 0; ++i)
    lrs.push_back(lr_cell(rows[i]));
  EXPECT_EQ(lrs, (std::vector<double>{0.08, 0.04, 0.04, 0.02}));
  EXPECT_EQ(weights(straight), split_run_weights(c, [](Config& f) { f.epochs = 2; }));
}

// --val-on-test: every training image trains (640 / 32 = 20 steps an epoch, not 18), the 200
// test images validate, and the last validation and the test see the same weights and data.
TEST_F(TrainerTest, ValOnTestTrainsOnEverythingAndValidatesOnTheTestSplit) {
  Config c = base();
  c.val_on_test = true;
  c.early_stopping_patience = 5;  // (a validation set is there to monitor)
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_EQ(r.global_step, 2 * 20);
  EXPECT_EQ(r.val.samples, 200);
  EXPECT_EQ(r.test.samples, 200);
  EXPECT_DOUBLE_EQ(r.val.loss, r.test.loss);
  EXPECT_EQ(r.val.confusion.counts(), r.test.confusion.counts());
  Config bad = base();
  bad.val_on_test = true;
  bad.overfit_batches = 2;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --float32-matmul-precision reaches the kernels' process-wide setting (each run sets it, so a
// later run with the default is float32 again); the CPU kernels ignore it, so on the CPU high
// trains bit for bit as highest (the GPU's TF32 is CudnnVsCpu.Float32MatmulPrecision...).
TEST_F(TrainerTest, Float32MatmulPrecisionIsSetPerRunAndTheCpuIgnoresIt) {
  Config c = base();
  c.epochs = 1;
  c.float32_matmul_precision = "high";
  Trainer high(c);
  high.fit();
  EXPECT_EQ(kernels::float32_matmul_precision(), kernels::MatmulPrecision::kHigh);
  c.float32_matmul_precision = "highest";
  c.experiment_name = "highest";
  Trainer highest(c);
  highest.fit();
  EXPECT_EQ(kernels::float32_matmul_precision(), kernels::MatmulPrecision::kHighest);
  EXPECT_EQ(weights(high), weights(highest));
}

// Lightning's sanity check: validation batches before training (2 by default, -1 all, 0 off),
// in the profile as its own action; evaluation changes nothing, so the weights are the same
// bit for bit with and without it.
TEST_F(TrainerTest, SanityCheckValidatesFirstAndChangesNothing) {
  auto profile_calls = [](const FitResult& r, const char* action) -> int64_t {
    std::ifstream f(r.version_dir + "/profile.json");
    const nlohmann::json j = nlohmann::json::parse(f);
    const auto& a = j.at("actions");
    return a.contains(action) ? a.at(action).at("calls").get<int64_t>() : 0;
  };
  Config c = base();
  c.epochs = 1;
  c.experiment_name = "sanity2";
  Trainer with(c);  // the default: 2 batches
  const FitResult r2 = with.fit();
  EXPECT_EQ(c.num_sanity_val_steps, 2);
  EXPECT_EQ(profile_calls(r2, "sanity check"), 1);
  EXPECT_EQ(profile_calls(r2, "validation"), 1);  // the epoch's own, unchanged
  c.num_sanity_val_steps = 0;
  c.experiment_name = "sanity0";
  Trainer without(c);
  const FitResult r0 = without.fit();
  EXPECT_EQ(profile_calls(r0, "sanity check"), 0);
  EXPECT_EQ(weights(with), weights(without));
  EXPECT_EQ(r2.val.loss, r0.val.loss);

  Config bad = base();
  bad.num_sanity_val_steps = -2;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
