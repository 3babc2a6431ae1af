// --accumulation-schedule (Lightning's GradientAccumulationScheduler): each epoch accumulates
// its own number of batches; the run equals one resumed at each change with that epoch's
// --accumulate-grad-batches, and the learning-rate schedule spans the steps the epochs take.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

TEST(AccumulationSchedule, ParsesAsLightningsSchedulingDict) {
  using Pairs = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(parse_accumulation_schedule("0:8,4:4,8:1"), (Pairs{{0, 8}, {4, 4}, {8, 1}}));
  Config c;
  c.accumulation_schedule = "0:8,4:4,8:1";
  const std::vector<int64_t> want = {8, 8, 8, 8, 4, 4, 4, 4, 1, 1};
  for (int64_t e = 0; e < 10; ++e) EXPECT_EQ(accumulation_at(c, e), want[e]) << e;
  EXPECT_TRUE(accumulates(c));
  c.accumulation_schedule = "2:4";  // 1 before the first epoch named
  EXPECT_EQ(accumulation_at(c, 1), 1);
  EXPECT_EQ(accumulation_at(c, 2), 4);
  c.accumulation_schedule = "";
  c.accumulate_grad_batches = 3;  // no schedule: the flag's count everywhere
  EXPECT_EQ(accumulation_at(c, 7), 3);
  for (const char* bad : {"4:4,2:2", "0:0", "x:1", "0:2,", "0", "-1:2", "0:1:2", "0:2097152"}) {
    try {
      parse_accumulation_schedule(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--accumulation-schedule"), std::string::npos)
          << e.what();
    }
  }
  Config both;
  both.accumulation_schedule = "0:2";
  both.accumulate_grad_batches = 2;
  EXPECT_THROW(both.validate(), std::invalid_argument);
  Config graphs;
  graphs.cuda_graphs = true;
  graphs.accumulation_schedule = "0:1,3:2";
  EXPECT_THROW(graphs.validate(), std::invalid_argument);
  graphs.accumulation_schedule = "0:1";
  EXPECT_NO_THROW(graphs.validate());
}

TEST_F(TrainerTest, AccumulationScheduleChangesTheGroupsEachEpoch) {
  Config c = base();  // 18 batches of 32 per epoch
  c.epochs = 3;
  c.optimizer = "sgd";
  c.momentum = 0.9;
  c.lr = 0.05;
  c.lr_schedule = "constant";
  Config scheduled = c;
  scheduled.accumulation_schedule = "0:1,1:4,2:2";
  scheduled.experiment_name = "scheduled";
  Trainer straight(scheduled);
  EXPECT_EQ(straight.fit().global_step, 18 + 5 + 9);
  // The same training as three runs, each resumed where the count changes.
  std::string resume;
  std::vector<std::vector<float>> chained;
  for (const auto& [accum, until] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 18}, {4, 18 + 5}, {2, 18 + 5 + 9}}) {
    Config part = c;
    part.accumulate_grad_batches = accum;
    part.max_steps = until;
    part.resume = resume;
    part.experiment_name = "chained";
    Trainer t(part);
    const FitResult r = t.fit();
    EXPECT_EQ(r.global_step, until);
    resume = r.version_dir + "/checkpoints/last.h5";
    chained = weights(t);
  }
  EXPECT_EQ(chained, weights(straight));
  // Ended inside epoch 1's groups of 4 (as a time limit would end it) and resumed with the same
  // schedule: the same weights as the straight run.
  Config stop = scheduled;
  stop.experiment_name = "stopped";
  stop.max_steps = 18 + 2;
  const FitResult r1 = Trainer(stop).fit();
  EXPECT_EQ(r1.global_step, 20);
  Config rest = scheduled;
  rest.experiment_name = "stopped";
  rest.resume = r1.version_dir + "/checkpoints/last.h5";
  Trainer resumed(rest);
  EXPECT_EQ(resumed.fit().global_step, 18 + 5 + 9);
  EXPECT_EQ(weights(resumed), weights(straight));

  // The cosine schedule spans the 32 steps: each epoch's last rate (metrics.csv) is the cosine's
  // at steps 17, 22 and 31 of 32 (with 3 x 18 steps it would be 0.78, 0.64 and 0.39 x --lr).
  Config cosine = scheduled;
  cosine.lr_schedule = "cosine";
  cosine.experiment_name = "cosine";
  const FitResult r = Trainer(cosine).fit();
  const std::vector<std::string> rows = metrics_rows(r.version_dir);
  ASSERT_GE(rows.size(), 4u);
  const int64_t last_step[] = {17, 22, 31};
  for (int e = 0; e < 3; ++e) {
    const double want = cosine.lr * (1 + std::cos(M_PI * last_step[e] / 32.0)) / 2;
    EXPECT_NEAR(lr_cell(rows[e + 1]), want, 1e-6 * cosine.lr) << rows[e + 1];
  }

  // cosine_restarts with one-epoch cycles restarts every epoch, whatever its length: each
  // epoch's last rate is the cosine's at (steps - 1) / steps of its 18, 5 and 9 steps.
  Config sgdr = scheduled;
  sgdr.lr_schedule = "cosine_restarts";
  sgdr.lr_restart_epochs = 1;
  sgdr.experiment_name = "sgdr";
  const std::vector<std::string> srows = metrics_rows(Trainer(sgdr).fit().version_dir);
  ASSERT_GE(srows.size(), 4u);
  const int64_t steps[] = {18, 5, 9};
  for (int e = 0; e < 3; ++e) {
    const double pct = static_cast<double>(steps[e] - 1) / static_cast<double>(steps[e]);
    EXPECT_NEAR(lr_cell(srows[e + 1]), sgdr.lr * (1 + std::cos(M_PI * pct)) / 2, 1e-6 * sgdr.lr)
        << srows[e + 1];
  }
}

}  // namespace
}  // namespace mlai::nn
