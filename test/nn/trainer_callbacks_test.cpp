// Lightning's callbacks and limits on the trainer, on the small synthetic MNIST-format set:
// max_steps and max_time, the learning-rate finder, ModelCheckpoint's monitor and top k, the
// validation schedule, ReduceLROnPlateau, class weights. (Early stopping:
// early_stopping_test.cpp; per-step TensorBoard logging: trainer_logging_test.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "nn/checkpoint.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// Lightning's max_steps: training ends at step 23 (epoch 2, batch 5) with a validation, the
// test and a last.h5 that resumes mid-epoch exactly; the schedule spans the 23 steps; a
// resume with the same limit trains nothing more; --epochs -1 runs the epochs the steps need.
TEST_F(TrainerTest, MaxStepsEndsTrainingMidEpochAndResumesExactly) {
  Config c = base();
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.lr_schedule = "constant";
  Trainer straight(c);
  straight.fit();

  Config capped = c;
  capped.max_steps = 23;
  capped.experiment_name = "capped";
  Trainer first(capped);
  const FitResult r1 = first.fit();
  EXPECT_EQ(r1.limit, "max_steps");
  EXPECT_EQ(r1.global_step, 23);
  EXPECT_EQ(r1.epochs_completed, 1);
  EXPECT_GT(r1.val.samples, 0);
  EXPECT_GT(r1.test.samples, 0);
  const std::string ckpt = r1.version_dir + "/checkpoints/last.h5";
  const TrainState st = load_checkpoint(ckpt, first.model(), nullptr);
  EXPECT_EQ(st.epoch, 1);
  EXPECT_EQ(st.next_batch, 5);
  EXPECT_GT(st.train_seconds, 0.0);

  Config same = capped;  // the limit is already reached: straight to the test
  same.resume = ckpt;
  Trainer again(same);
  const FitResult r2 = again.fit();
  EXPECT_EQ(r2.limit, "max_steps");
  EXPECT_EQ(r2.global_step, 23);
  EXPECT_GT(r2.test.samples, 0);

  Config rest = c;  // the rest of the run, without the limit: as if never capped
  rest.experiment_name = "capped";
  rest.resume = ckpt;
  Trainer resumed(rest);
  const FitResult r3 = resumed.fit();
  EXPECT_TRUE(r3.limit.empty());
  EXPECT_EQ(r3.global_step, 36);
  EXPECT_EQ(weights(straight), weights(resumed));

  // The cosine schedule reaches its end at max_steps, not at --epochs' last step: the last
  // step's lr (metrics.csv) is within 1% of 0 (over the whole 36 steps it would be 0.33 lr).
  Config cos = base();
  cos.max_steps = 23;
  cos.epochs = -1;  // as many epochs as 23 steps need: 2
  cos.experiment_name = "cosine";
  const FitResult r4 = Trainer(cos).fit();
  EXPECT_EQ(r4.global_step, 23);
  const std::vector<std::string> rows = metrics_rows(r4.version_dir);
  ASSERT_EQ(rows.size(), 4u);  // header, epochs 1 and 2, test
  const std::string& row = rows[2];
  const double lr = lr_cell(row);
  EXPECT_LT(lr, 0.01 * cos.lr) << row;
  EXPECT_GT(lr, 0.0) << row;

  Config bad = base();
  bad.epochs = -1;  // -1 needs max_steps
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.max_steps = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// Lightning's max_time: a 1 s budget ends a 1000-epoch run, in every case with the test; the
// time is saved in last.h5 and counts on resume (the same budget trains nothing more, a
// larger one goes on).
// The progress line (plain quarter lines in a log) counts to where --max-steps ends the epoch,
// so its estimate of the time left is for the batches that will run.
TEST_F(TrainerTest, ProgressLineCountsToMaxSteps) {
  Config c = base();
  c.max_steps = 8;  // of 18 batches an epoch
  c.progress = true;
  ::testing::internal::CaptureStdout();
  Trainer(c).fit();
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find(" 6/8 ["), std::string::npos) << out;
  EXPECT_EQ(out.find("/18 ["), std::string::npos) << out;
}

TEST_F(TrainerTest, MaxTimeEndsTrainingAndCountsOverResumes) {
  Config c = base();
  c.epochs = 1000;
  c.max_time = "00:00:00:01";
  c.lr_schedule = "constant";
  Trainer t(c);
  const FitResult r1 = t.fit();
  EXPECT_EQ(r1.limit, "max_time");
  EXPECT_GT(r1.global_step, 0);
  EXPECT_LT(r1.global_step, 1000 * 18);
  EXPECT_GT(r1.test.samples, 0);
  const std::string ckpt = r1.version_dir + "/checkpoints/last.h5";
  const TrainState st = load_checkpoint(ckpt, t.model(), nullptr);
  EXPECT_GE(st.train_seconds, 1.0);
  EXPECT_EQ(st.global_step, r1.global_step);

  Config same = c;
  same.resume = ckpt;
  const FitResult r2 = Trainer(same).fit();
  EXPECT_EQ(r2.limit, "max_time");
  EXPECT_EQ(r2.global_step, r1.global_step);

  Config more = c;
  more.resume = ckpt;
  more.max_time = "0:02";  // Slurm's MM:SS
  const FitResult r3 = Trainer(more).fit();
  EXPECT_EQ(r3.limit, "max_time");
  EXPECT_GT(r3.global_step, r1.global_step);
}

TEST(Duration, ReadsLightningAndSlurmFormats) {
  EXPECT_EQ(parse_duration("00:12:00:00", "--max-time"), 12 * 3600.0);
  EXPECT_EQ(parse_duration("1-02:03:04", "--max-time"), 86400.0 + 2 * 3600 + 3 * 60 + 4);
  EXPECT_EQ(parse_duration("2-12", "--max-time"), 2 * 86400.0 + 12 * 3600);
  EXPECT_EQ(parse_duration("0-01:30", "--max-time"), 90 * 60.0);
  EXPECT_EQ(parse_duration("90", "--max-time"), 90 * 60.0);  // Slurm: minutes
  EXPECT_EQ(parse_duration("01:30", "--max-time"), 90.0);    // MM:SS
  EXPECT_EQ(parse_duration("02:00:00", "--max-time"), 7200.0);
  EXPECT_EQ(parse_duration("1.5", "--max-time"), 90.0);  // (a decimal point in any field)
  EXPECT_EQ(parse_duration("0:0.25", "--max-time"), 0.25);
  for (const char* bad : {"", "x", "1.5.", "0:.", "1,5", "1:2:3:4:5", "1-2:3:4:5", "0", "00:00:00:00", "-5",
                          "1:", ":1", "1--2"}) {
    try {
      parse_duration(bad, "--max-time");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--max-time"), std::string::npos) << e.what();
    }
  }
}

// --lr-find: the range test's suggestion becomes the learning rate, and the model, optimizer
// and dropout generator are put back, so the run ends with the weights of a run given that
// rate from the start; "only" trains nothing; the curve and the suggestion are on file.
TEST_F(TrainerTest, LrFindAppliesItsSuggestionFromTheUntouchedStart) {
  Config c = base();
  c.epochs = 1;
  c.dropout = 0.2;
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.lr_find = "apply";
  Trainer found(c);
  const FitResult r = found.fit();
  EXPECT_GT(r.lr_found, 1e-8);
  EXPECT_LT(r.lr_found, 1.0);
  EXPECT_EQ(r.global_step, 18);
  std::ifstream csv(r.version_dir + "/lr_find.csv");
  std::vector<std::string> rows;
  for (std::string l; std::getline(csv, l);) rows.push_back(l);
  ASSERT_GE(rows.size(), 13u);  // header + at least 12 steps (suggestions skip 11)
  EXPECT_LE(rows.size(), 101u);
  EXPECT_EQ(rows[0], "step,lr,loss,smoothed_loss");
  EXPECT_EQ(rows[1].rfind("0,1e-08,", 0), 0u) << rows[1];
  std::ifstream hp(r.version_dir + "/hparams.json");
  const auto j = nlohmann::json::parse(hp);
  EXPECT_EQ(j["lr_find"]["suggested_lr"].get<double>(), r.lr_found);
  EXPECT_EQ(j["config"]["lr"].get<double>(), r.lr_found);

  // A run given the found rate from the start (lr_find off) ends with these weights.
  auto given_weights = [&](Config g, double lr, const std::string& name) {
    g.lr_find = "";
    g.lr = lr;
    g.experiment_name = name;
    Trainer plain(g);
    plain.fit();
    return weights(plain);
  };
  EXPECT_EQ(weights(found), given_weights(c, r.lr_found, "given"));

  Config only = c;
  only.lr_find = "only";
  only.experiment_name = "only";
  const FitResult r2 = Trainer(only).fit();
  EXPECT_EQ(r2.global_step, 0);
  EXPECT_EQ(r2.lr_found, r.lr_found);  // the same start, the same test
  EXPECT_FALSE(fs::exists(r2.version_dir + "/checkpoints/last.h5"));

  // Resubmitted with the same flags (what a requeued Slurm job does), the run keeps its rate:
  // no second test.
  Config again = c;
  again.epochs = 2;
  again.resume = r.version_dir + "/checkpoints/last.h5";
  again.experiment_name = "again";
  const FitResult r3 = Trainer(again).fit();
  EXPECT_EQ(r3.lr_found, 0.0);
  EXPECT_EQ(r3.global_step, 36);
  std::ifstream hp3(r3.version_dir + "/hparams.json");
  EXPECT_EQ(nlohmann::json::parse(hp3)["config"]["lr"].get<double>(), r.lr_found);

  // Mixed precision: the loss scaler's state (scale, skips) is put back too.
  Config half = c;
  half.precision = "16";
  half.experiment_name = "half";
  Trainer found16(half);
  const FitResult r16 = found16.fit();
  EXPECT_EQ(weights(found16), given_weights(half, r16.lr_found, "given16"));

  Config bad = c;
  bad.lr_find = "auto";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.lr_find = "only";
  bad.resume = r.version_dir + "/checkpoints/last.h5";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --lr-find under --accumulate-grad-batches 2 with batches of 16 takes the steps a run with
// batches of 32 takes (two half batches summed, each loss halved): the same curve and rate.
TEST_F(TrainerTest, LrFindAccumulatesAsTrainingDoes) {
  Config whole = base();
  whole.lr_find = "only";
  whole.optimizer = "sgd";
  whole.experiment_name = "whole";
  Config halves = whole;
  halves.batch_size = 16;
  halves.accumulate_grad_batches = 2;
  halves.experiment_name = "halves";
  const FitResult a = Trainer(whole).fit(), b = Trainer(halves).fit();
  auto curve = [](const std::string& dir) {
    std::ifstream csv(dir + "/lr_find.csv");
    std::vector<double> loss;
    std::string l;
    std::getline(csv, l);
    while (std::getline(csv, l)) {
      const size_t c1 = l.find(','), c2 = l.find(',', c1 + 1);
      loss.push_back(std::stod(l.substr(c2 + 1)));
    }
    return loss;
  };
  const auto la = curve(a.version_dir), lb = curve(b.version_dir);
  ASSERT_EQ(la.size(), lb.size());
  ASSERT_GT(la.size(), 20u);
  for (size_t i = 0; i < la.size() && std::isfinite(la[i]); ++i)
    EXPECT_NEAR(lb[i], la[i], 1e-4 * std::max(1.0, std::fabs(la[i]))) << "step " << i;
  EXPECT_EQ(b.lr_found, a.lr_found);
}

TEST(LrFind, SuggestsTheSteepestFallAfterTheFirstTenPoints) {
  std::vector<double> l(30, 2.0);
  for (size_t i = 15; i < l.size(); ++i) l[i] = 1.0;  // the drop between 14 and 15
  l[3] = -5;                                          // steeper, but among the skipped first 10
  l[14] = 1.9;
  // Central differences: index 14 falls by (1.0 - 2.0)/2 = -0.5, 15 by (1.0 - 1.9)/2 = -0.45.
  EXPECT_EQ(steepest_descent(l, 10, 1), 14);
  l[13] = std::nan("");  // not finite: dropped, so 12 and 14 become neighbours
  EXPECT_EQ(steepest_descent(l, 10, 1), 14);
  EXPECT_EQ(steepest_descent(std::vector<double>(11, 1.0), 10, 1), -1);  // nothing left
}

// Lightning's ModelCheckpoint(monitor="val_loss", save_top_k=2) over four validations (steps 9,
// 18, 27, 36): the two with the lowest validation loss are kept as epoch=E-step=S-val_loss=V.h5,
// best.h5 is the lowest (and holds its score and the top-k list); -1 keeps all four, 0 none.
TEST_F(TrainerTest, KeepsTheTopKCheckpointsByTheMonitoredMetric) {
  Config c = base();
  c.val_check_interval = "0.5";
  c.checkpoint_monitor = "val_loss";
  c.save_top_k = 2;
  Trainer t(c);
  const FitResult r = t.fit();
  std::vector<std::pair<float, int64_t>> losses;  // (val loss, step)
  for (auto& e : fs::directory_iterator(r.version_dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      for (const std::string& rec : testing::read_records(e.path()))
        if (const testing::Scalar sc = testing::decode_scalar(rec); sc.tag == "val/loss")
          losses.emplace_back(sc.value, sc.step);
  ASSERT_EQ(losses.size(), 4u);
  std::sort(losses.begin(), losses.end());
  auto kept_steps = [](const std::string& version_dir) {
    std::set<int64_t> steps;
    for (auto& e : fs::directory_iterator(version_dir + "/checkpoints")) {
      const std::string f = e.path().filename();
      if (f.rfind("epoch=", 0) != 0) continue;
      EXPECT_NE(f.find("-val_loss="), std::string::npos) << f;
      steps.insert(std::stoll(f.substr(f.find("-step=") + 6)));
    }
    return steps;
  };
  EXPECT_EQ(kept_steps(r.version_dir), (std::set<int64_t>{losses[0].second, losses[1].second}));
  const std::string best = r.version_dir + "/checkpoints/best.h5";
  const TrainState st = load_checkpoint(best, t.model(), nullptr);
  EXPECT_EQ(st.global_step, losses[0].second);
  EXPECT_NEAR(st.best_score, losses[0].first, 1e-6 * losses[0].first);
  EXPECT_FALSE(st.top_k.empty());  // the list as it was when best.h5 was written

  // Resumed into another directory (a new version), best.h5 and the list start afresh there,
  // even when the resumed run never beats the old best (its lr is all but 0).
  Config more = c;
  more.epochs = 3;
  more.lr = 1e-12;
  more.resume = r.version_dir + "/checkpoints/last.h5";
  more.experiment_name = "more";
  const FitResult rm = Trainer(more).fit();
  EXPECT_TRUE(fs::exists(rm.version_dir + "/checkpoints/best.h5"));
  EXPECT_EQ(kept_steps(rm.version_dir).size(), 2u);

  Config all = c;
  all.save_top_k = -1;
  all.experiment_name = "all";
  EXPECT_EQ(kept_steps(Trainer(all).fit().version_dir), (std::set<int64_t>{9, 18, 27, 36}));
  Config none = c;
  none.save_top_k = 0;
  none.experiment_name = "none";
  const FitResult r0 = Trainer(none).fit();
  EXPECT_FALSE(fs::exists(r0.version_dir + "/checkpoints/best.h5"));
  EXPECT_TRUE(kept_steps(r0.version_dir).empty());
  Config bad = base();
  bad.save_top_k = -2;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.save_top_k = 1;
  bad.checkpoint_monitor = "train_loss";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --test-ckpt best (Lightning's trainer.test(ckpt_path="best")): a requeued job (the same
// SLURM_JOB_ID, so the same directory and best.h5) resumes for a third epoch at a learning rate
// that wrecks the model. Its test then uses best.h5, the weights the first two epochs ended
// with, and gets their test result; --test-ckpt last tests the wrecked weights.
TEST_F(TrainerTest, TestsTheBestCheckpointWhenAsked) {
  setenv("SLURM_JOB_ID", "4242", 1);
  Config c = base();
  c.epochs = 2;
  c.lr_schedule = "constant";
  c.checkpoint_monitor = "val_loss";  // falls in both epochs, so best.h5 is the second's
  Trainer good(c);
  const FitResult r1 = good.fit();
  const auto best_weights = weights(good);
  const std::string after_two = r1.version_dir + "/after_two_epochs.h5";
  fs::copy_file(r1.version_dir + "/checkpoints/last.h5", after_two);
  auto requeued = [&](const std::string& which) {
    Config more = c;
    more.epochs = 3;
    more.lr = 5.0;
    more.test_ckpt = which;
    more.resume = after_two;
    auto t = std::make_unique<Trainer>(more);
    const FitResult r = t->fit();
    EXPECT_EQ(r.version_dir, r1.version_dir);
    EXPECT_EQ(r.epochs_completed, 3);
    return std::make_pair(weights(*t), r.test);
  };
  const auto [best_w, best_test] = requeued("best");
  const auto [last_w, last_test] = requeued("last");
  unsetenv("SLURM_JOB_ID");
  EXPECT_EQ(best_w, best_weights);
  EXPECT_NE(last_w, best_weights);
  EXPECT_EQ(best_test.loss, r1.test.loss);
  EXPECT_EQ(best_test.confusion.accuracy(), r1.test.confusion.accuracy());
  EXPECT_GT(last_test.loss, best_test.loss);  // the third epoch did wreck it

  Config bad = base();
  bad.test_ckpt = "best";
  bad.save_top_k = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.save_top_k = 1;
  bad.test_ckpt = "first";
  EXPECT_THROW(bad.validate(), std::invalid_argument);

  // --test-ckpt FILE after training tests that file's weights (here the copy of epoch 2's):
  // the same test as the run that ended with them.
  Config file = c;
  file.epochs = 1;
  file.experiment_name = "file";
  file.test_ckpt = after_two;
  const FitResult rf = Trainer(file).fit();
  EXPECT_EQ(rf.test.loss, r1.test.loss);
  EXPECT_EQ(rf.epochs_completed, 1);
}

// Lightning's val_check_interval and check_val_every_n_epoch: validations at half epochs (steps
// 9 and 27) besides the epochs' ends; training itself is untouched by them (the same weights as
// without); and with validation every 2nd epoch of 3, only epochs 2 and 3 validate.
TEST_F(TrainerTest, ValidatesWithinEpochsAndEveryNthEpoch) {
  Config c = base();
  c.dropout = 0.2;  // evaluation must not draw from the training generator
  Trainer plain(c);
  plain.fit();
  Config half = c;
  half.val_check_interval = "0.5";
  half.experiment_name = "half";
  Trainer t(half);
  const FitResult r = t.fit();
  EXPECT_EQ(weights(plain), weights(t));
  EXPECT_EQ(scalar_steps(r.version_dir, "val/loss"), (std::vector<int64_t>{9, 18, 27, 36}));
  EXPECT_TRUE(fs::exists(r.version_dir + "/checkpoints/best.h5"));

  Config every2 = base();
  every2.epochs = 3;
  every2.check_val_every_n_epoch = 2;
  every2.experiment_name = "every2";
  const FitResult r2 = Trainer(every2).fit();
  EXPECT_EQ(scalar_steps(r2.version_dir, "val/loss"), (std::vector<int64_t>{36, 54}));
  EXPECT_GT(r2.val.samples, 0);  // the last epoch always validates
  // metrics.csv: an epoch that did not validate leaves its val_* cells empty (not zeros).
  std::ifstream csv(r2.version_dir + "/metrics.csv");
  std::vector<std::string> rows;
  for (std::string l; std::getline(csv, l);) rows.push_back(l);
  ASSERT_GE(rows.size(), 3u);
  auto cell = [](const std::string& row, int k) {  // the k-th comma-separated cell
    size_t b = 0;
    for (int i = 0; i < k; ++i) b = row.find(',', b) + 1;
    return row.substr(b, row.find(',', b) - b);
  };
  ASSERT_EQ(cell(rows[0], 5), "val_loss");
  EXPECT_EQ(cell(rows[1], 5), "") << rows[1];  // epoch 1: no validation
  EXPECT_NE(cell(rows[2], 5), "") << rows[2];  // epoch 2

  Config bad = base();
  bad.val_check_interval = "0";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.val_check_interval = "1.0";
  bad.check_val_every_n_epoch = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --lr-schedule plateau: with an improvement no epoch can make (the accuracy would have to
// double; the first epoch's is already above 1/2) and patience 0, every epoch after the first
// halves the rate, from the next epoch on; metrics.csv shows each epoch's rate and last.h5
// keeps the scheduler's state, so a run split in two (2 epochs, then resumed for 2 more) ends
// with the same weights.
TEST_F(TrainerTest, PlateauScheduleLowersTheRateWhenValidationStalls) {
  Config c = base();
  c.epochs = 4;
  c.optimizer = "sgd";
  c.lr = 0.08;
  c.lr_schedule = "plateau";
  c.lr_gamma = 0.5;
  c.plateau_monitor = "val_accuracy";
  c.plateau_patience = 0;
  c.plateau_threshold = 1.0;
  Trainer straight(c);
  const FitResult r = straight.fit();
  const std::vector<std::string> rows = metrics_rows(r.version_dir);
  ASSERT_EQ(rows.size(), 6u);  // header, 4 epochs, test
  auto lr_of = [&](int epoch) { return lr_cell(rows[epoch]); };
  EXPECT_DOUBLE_EQ(lr_of(1), 0.08);
  EXPECT_DOUBLE_EQ(lr_of(2), 0.08);
  EXPECT_DOUBLE_EQ(lr_of(3), 0.04);
  EXPECT_DOUBLE_EQ(lr_of(4), 0.02);
  const TrainState st = load_checkpoint(r.version_dir + "/checkpoints/last.h5", straight.model(), nullptr);
  EXPECT_DOUBLE_EQ(st.plateau.lr, 0.01);  // after the 4th epoch's validation
  EXPECT_EQ(st.plateau.bad, 0);
  EXPECT_GT(st.plateau.best, 0.5);  // epoch 1's validation accuracy

  EXPECT_EQ(weights(straight), split_run_weights(c, [](Config& f) { f.epochs = 2; }));

  // A reachable threshold on a learnable set: the loss keeps falling, the rate stays.
  Config d = c;
  d.epochs = 3;
  d.plateau_monitor = "val_loss";
  d.plateau_threshold = 1e-4;
  d.experiment_name = "improving";
  const FitResult r2 = Trainer(d).fit();
  const TrainState st2 = load_checkpoint(r2.version_dir + "/checkpoints/last.h5", straight.model(), nullptr);
  EXPECT_DOUBLE_EQ(st2.plateau.lr, 0.08);

  Config bad = c;
  bad.val_split = 0;  // nothing to monitor
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = c;
  bad.lr_gamma = 1.0;  // a factor that lowers nothing
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = c;
  bad.plateau_monitor = "train_loss";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

// --class-weights (CrossEntropyLoss(weight=)): "balanced" is n / (classes x count) over the
// training split; a weight of 0 silences a class: its samples give no gradient while the
// others push its logit down, so it is never predicted, and the other nine are still learned.
TEST_F(TrainerTest, ClassWeightsBalanceAndSilenceClasses) {
  Config c = base();
  Trainer plain(c);
  const io::Dataset& train = plain.data().train;
  const std::vector<double> w = class_weight_values("balanced", train);
  ASSERT_EQ(w.size(), 10u);
  for (int k = 0; k < 10; ++k) {
    const auto n = std::count(train.labels.begin(), train.labels.end(), k);
    EXPECT_DOUBLE_EQ(w[static_cast<size_t>(k)],
                     static_cast<double>(train.count) / (10.0 * static_cast<double>(n)));
  }
  EXPECT_THROW(class_weight_values("1,2", train), std::invalid_argument);
  const FitResult r0 = plain.fit();
  const auto counts0 = r0.test.confusion.counts();
  EXPECT_GT(counts0[0], 0);  // unweighted, class 0 is learned (counts()[t * 10 + p])

  Config silent = base();
  silent.experiment_name = "silent";
  silent.class_weights = "0,1,1,1,1,1,1,1,1,1";
  const FitResult r = Trainer(silent).fit();
  const auto counts = r.test.confusion.counts();
  int64_t predicted0 = 0, right = 0, others = 0;
  for (size_t t = 0; t < 10; ++t) {
    predicted0 += counts[t * 10];
    if (t == 0) continue;
    right += counts[t * 10 + t];
    for (size_t p = 0; p < 10; ++p) others += counts[t * 10 + p];
  }
  EXPECT_EQ(predicted0, 0);
  EXPECT_GT(static_cast<double>(right) / static_cast<double>(others), 0.9);

  Config bad = base();
  bad.class_weights = "1,x";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.class_weights = "0,0";
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.class_weights = "balanced";
  bad.mixup_alpha = 0.2;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
