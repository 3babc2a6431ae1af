// --scale-batch-size (Lightning's Tuner.scale_batch_size): the search over batch sizes, with
// running out of memory simulated above a size (MLAI_FAULT_OOM_ABOVE), the state put back
// after the trials, and a resumed run keeping the size its run found.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../io/dataset_test_util.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

nlohmann::json hparams(const FitResult& r) {
  std::ifstream f(r.version_dir + "/hparams.json");
  return nlohmann::json::parse(f);
}

std::vector<std::pair<int64_t, bool>> trials(const nlohmann::json& hp) {
  std::vector<std::pair<int64_t, bool>> t;
  for (const auto& x : hp["scale_batch_size"]["trials"])
    t.emplace_back(x["batch_size"].get<int64_t>(), x["fits"].get<bool>());
  return t;
}

struct OomAbove {  // trials of more than n samples run out of memory, for the test's length
  explicit OomAbove(int n) { setenv("MLAI_FAULT_OOM_ABOVE", std::to_string(n).c_str(), 1); }
  ~OomAbove() { unsetenv("MLAI_FAULT_OOM_ABOVE"); }
};

TEST_F(TrainerTest, ScaleBatchSizeFindsTheLargestThatFitsAndRestoresTheStart) {
  Config c = base();
  c.epochs = 1;
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.dropout = 0.2;  // the dropout generators are put back too
  c.scale_batch_size = "power";
  FitResult power, bisect;
  std::vector<std::vector<float>> found_weights;
  {
    const OomAbove oom(40);
    Trainer t(c);
    power = t.fit();
    found_weights = weights(t);
    Config b = c;
    b.scale_batch_size = "binsearch";
    b.experiment_name = "binsearch";
    bisect = Trainer(b).fit();
  }
  const nlohmann::json hp = hparams(power);
  EXPECT_EQ(hp["config"]["batch_size"].get<int64_t>(), 32);
  EXPECT_EQ(hp["scale_batch_size"]["batch_size"].get<int64_t>(), 32);
  EXPECT_EQ(trials(hp), (std::vector<std::pair<int64_t, bool>>{
                            {2, true}, {4, true}, {8, true}, {16, true}, {32, true}, {64, false}}));
  // 576 training samples at batch 32: 18 steps.
  EXPECT_EQ(power.global_step, 18);
  const nlohmann::json hb = hparams(bisect);
  EXPECT_EQ(hb["config"]["batch_size"].get<int64_t>(), 40);
  EXPECT_EQ(trials(hb), (std::vector<std::pair<int64_t, bool>>{{2, true},
                                                               {4, true},
                                                               {8, true},
                                                               {16, true},
                                                               {32, true},
                                                               {64, false},
                                                               {48, false},
                                                               {40, true},
                                                               {44, false},
                                                               {42, false},
                                                               {41, false}}));
  // The trials leave no trace: training then is a run given --batch-size 32 from the start.
  Config given = c;
  given.scale_batch_size = "";
  given.batch_size = 32;
  given.experiment_name = "given";
  Trainer plain(given);
  plain.fit();
  EXPECT_EQ(found_weights, weights(plain));

  // Nothing runs out of memory: the search stops at the whole training split.
  Config all = c;
  all.experiment_name = "all";
  const nlohmann::json ha = hparams(Trainer(all).fit());
  EXPECT_EQ(ha["config"]["batch_size"].get<int64_t>(), 576);
  EXPECT_EQ(trials(ha).back(), (std::pair<int64_t, bool>{576, true}));
  EXPECT_EQ(trials(ha).size(), 10u);  // 2 .. 512, then 576
}

TEST_F(TrainerTest, ScaleBatchSizeIsKeptOnResume) {
  Config c = base();
  c.epochs = 2;
  c.scale_batch_size = "power";
  c.experiment_name = "requeued";
  std::string last;
  {
    const OomAbove oom(20);
    Config first = c;
    first.max_steps = 5;
    last = Trainer(first).fit().version_dir + "/checkpoints/last.h5";
  }
  // The same command line again (a requeued job) with --resume: no new search (which would
  // now find 576), the run's 16.
  Config again = c;
  again.resume = last;
  const FitResult r = Trainer(again).fit();
  const nlohmann::json hp = hparams(r);
  EXPECT_EQ(hp["config"]["batch_size"].get<int64_t>(), 16);
  EXPECT_FALSE(hp.contains("scale_batch_size"));
  EXPECT_EQ(r.global_step, 2 * 36);  // 576 / 16 steps an epoch

  Config bad = c;
  bad.scale_batch_size = "doubling";
  EXPECT_NE(testing::error_of([&] { bad.validate(); }).find("--scale-batch-size 'doubling'"),
            std::string::npos);
  bad.scale_batch_size = "power";
  bad.fast_dev_run = 1;
  EXPECT_NE(testing::error_of([&] { bad.validate(); }).find("--fast-dev-run"), std::string::npos);
}

}  // namespace
}  // namespace mlai::nn
