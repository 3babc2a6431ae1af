// The trainer end to end under mpirun -np 2 on the CPU: two ranks with batch B/2 each end with
// the weights of one process with batch B (plain, with weight averaging, unfreezing and
// accumulation, and when a run resumes on the other number of ranks); limits and signals stop
// both ranks at the same step; rank 0's best checkpoint tests on every rank; the profile and
// the trace show every rank.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"
#include "tensor/trace.h"
#include "ddp_fixture.h"

namespace mlai::dist {
namespace {

TEST_F(Ddp, TwoRanksWithHalfBatchesMatchOneRankWithTheWholeBatch) {
  nn::Config two = config(16);
  nn::Trainer ddp(two, "", group());
  const nn::FitResult r2 = ddp.fit();
  nn::Config one = config(32);
  one.log_dir = root + "/logs-single";
  nn::Trainer single(one, "", ProcessGroup::single());
  const nn::FitResult r1 = single.fit();
  EXPECT_LT(max_rel_diff(flat_weights(ddp), flat_weights(single)), 1e-5)
      << "after " << r2.global_step << " steps";
  EXPECT_EQ(r2.global_step, r1.global_step);
  // Exact global evaluation: every test image counted once, the same confusion matrix.
  EXPECT_EQ(r2.test.samples, 200);
  EXPECT_EQ(r2.test.confusion.counts(), r1.test.confusion.counts());
  EXPECT_EQ(r2.val.samples, r1.val.samples);
}

// --optimizer lars and lamb: each rank computes the trust ratios from the averaged gradient,
// so two ranks of B/2 step as one process of B (the norms summed in another order: rounding).
TEST_F(Ddp, LayerwiseOptimizersTwoRanksMatchOneRank) {
  for (const char* opt : {"lars", "lamb"}) {
    SCOPED_TRACE(opt);
    auto with = [&](nn::Config c) {
      c.optimizer = opt;
      c.lr = std::string(opt) == "lars" ? 2.0 : 0.02;
      c.weight_decay = std::string(opt) == "lars" ? 5e-4 : 0.01;
      c.trust_coefficient = 0.02;
      c.no_bias_decay = true;
      c.experiment_name = opt;
      return c;
    };
    nn::Trainer ddp(with(config(16)), "", group());
    const nn::FitResult r2 = ddp.fit();
    nn::Config one = with(config(32));
    one.log_dir = root + "/logs-single";
    nn::Trainer single(one, "", ProcessGroup::single());
    single.fit();
    EXPECT_LT(max_rel_diff(flat_weights(ddp), flat_weights(single)), 1e-5)
        << "after " << r2.global_step << " steps";
    EXPECT_GT(r2.test.confusion.accuracy(), 0.5);
  }
}

// --activation-checkpointing under data parallelism: the recomputed blocks' gradients reach
// the reducer through the same gradient-ready hooks, so two ranks end with the weights of two
// ranks without it, bit for bit; with --sync-bn too (the recomputation's statistics allreduce
// runs inside backward, beside the reducer's), weights and running statistics.
TEST_F(Ddp, ActivationCheckpointingKeepsTheReducersResult) {
  auto cfg = [&](bool ck, bool sync) {
    nn::Config c = config(8);
    c.arch = "resnet20";
    c.epochs = 1;
    c.limit_train_batches = std::to_string(3);
    c.limit_val_batches = std::to_string(1);
    c.limit_test_batches = std::to_string(1);
    c.activation_checkpointing = ck;
    c.sync_bn = sync;
    c.log_dir = root + (ck ? "/logs-ac-on" : "/logs-ac-off") + (sync ? "-sync" : "");
    return c;
  };
  for (bool sync : {false, true}) {
    SCOPED_TRACE(sync ? "--sync-bn" : "per-rank batch norm");
    std::vector<double> w[2], stats[2];
    for (int ck = 0; ck < 2; ++ck) {
      nn::Trainer t(cfg(ck == 1, sync), "", group());
      t.fit();
      w[ck] = flat_weights(t);
      for (auto& [n, b] : t.model().named_buffers())
        for (double x : b->to_double_vector()) stats[ck].push_back(x);
    }
    EXPECT_EQ(w[1], w[0]);
    EXPECT_EQ(stats[1], stats[0]);
  }
}

// --ddp-comm-hook: the gradients cross in 16 bits, so the run drifts from one process's by
// about their rounding, not more (bf16 keeps 8 bits, fp16 11), and it is not bit-identical to
// the uncompressed run (the compression happened).
TEST_F(Ddp, CompressedGradientsTrainAsOneRankToTheirRounding) {
  nn::Config one = config(32);
  one.log_dir = root + "/logs-single-hook";
  nn::Trainer single(one, "", ProcessGroup::single());
  single.fit();
  for (const char* hook : {"fp16", "bf16"}) {
    SCOPED_TRACE(hook);
    nn::Config two = config(16);
    two.ddp_comm_hook = hook;
    two.log_dir = root + "/logs-hook-" + hook;
    nn::Trainer ddp(two, "", group());
    const nn::FitResult r2 = ddp.fit();
    const double rel = max_rel_diff(flat_weights(ddp), flat_weights(single));
    EXPECT_LT(rel, std::string(hook) == "fp16" ? 2e-3 : 2e-2)
        << "after " << r2.global_step << " steps";
    EXPECT_GT(rel, 1e-5) << "no further from one process than uncompressed two ranks are";
    EXPECT_EQ(r2.test.samples, 200);
  }
}

// --ddp-comm-hook powersgd: two ranks still learn the synthetic set with rank-2 gradients of
// the mlp's weight matrices (error feedback makes up the rest), and end elsewhere than without.
TEST_F(Ddp, PowerSgdTrainsTwoRanks) {
  for (const char* precision : {"32", "16"}) {  // (16: the fp16 buckets through float32 copies)
    SCOPED_TRACE(precision);
    nn::Config c = config(16);
    c.epochs = 3;
    c.precision = precision;
    c.ddp_comm_hook = "powersgd";
    c.powersgd_rank = 2;
    c.powersgd_start_iter = 3;
    c.log_dir = root + "/logs-powersgd-" + precision;
    nn::Trainer ddp(c, "", group());
    const nn::FitResult r = ddp.fit();
    nn::Config plain = c;
    plain.ddp_comm_hook = "none";
    plain.log_dir = root + "/logs-powersgd-plain-" + precision;
    nn::Trainer uncompressed(plain, "", group());
    const nn::FitResult p = uncompressed.fit();
    EXPECT_GT(r.val.confusion.accuracy(), p.val.confusion.accuracy() - 0.1)
        << "uncompressed " << p.val.confusion.accuracy();
    EXPECT_GT(max_rel_diff(flat_weights(ddp), flat_weights(uncompressed)), 1e-3);
  }
}

// Resumed on another number of ranks (a requeued job given fewer or more nodes): the epoch
// continues from the sample its checkpoint reached, so two ranks of batch 16 stopped mid-epoch
// and resumed as one process of batch 32 (or of 16, accumulating 2) end where one process of
// batch 32 throughout does, and the other way round. Off the batch grid (batch 24 resumed as
// two ranks of 16) both ranks still take the same steps, with the same weights.
TEST_F(Ddp, ResumeOnAnotherNumberOfRanksContinuesTheEpoch) {
  nn::Config one = config(32);
  one.log_dir = root + "/logs-single";
  nn::Trainer single(one, "", ProcessGroup::single());
  single.fit();
  const std::vector<double> want = flat_weights(single);
  // config(batch) on `g` stopped by --max-steps within the first epoch (6 batches): its last.h5.
  auto stopped = [&](int64_t batch, int64_t steps, ProcessGroup& g, const std::string& logs) {
    nn::Config c = config(batch);
    c.max_steps = steps;
    c.log_dir = root + "/" + logs;
    return nn::Trainer(c, "", g).fit().version_dir + "/checkpoints/last.h5";
  };
  // `c` resumed from `ckpt` on `g`: the steps it ends at and its weights.
  auto resumed = [&](nn::Config c, const std::string& ckpt, ProcessGroup& g,
                     const std::string& logs) {
    c.log_dir = root + "/" + logs;
    c.resume = ckpt;
    nn::Trainer t(c, "", g);
    const int64_t steps = t.fit().global_step;
    return std::pair<int64_t, std::vector<double>>(steps, flat_weights(t));
  };

  // Two ranks -> one (rank 0 holds the checkpoint), with batch 32 or accumulating two of 16
  // (twice the batches, the same steps).
  const std::string two = stopped(16, 4, group(), "logs-two");
  if (group().rank() == 0) {
    const auto [steps, w] = resumed(config(32), two, ProcessGroup::single(), "logs-one");
    EXPECT_EQ(steps, 2 * 6);
    EXPECT_LT(max_rel_diff(w, want), 1e-5);
    nn::Config halves = config(16);
    halves.accumulate_grad_batches = 2;
    halves.limit_train_batches = "12";
    const auto [steps2, w2] = resumed(halves, two, ProcessGroup::single(), "logs-accumulating");
    EXPECT_EQ(steps2, 2 * 6);
    EXPECT_LT(max_rel_diff(w2, want), 1e-5);
  }

  // One -> two: each rank resumes from its own copy of one process's checkpoint.
  const std::string first = stopped(32, 4, ProcessGroup::single(), "logs-first");
  const auto [steps, w] = resumed(config(16), first, group(), "logs-two-again");
  EXPECT_EQ(steps, 2 * 6);
  EXPECT_LT(max_rel_diff(w, want), 1e-5);

  // Batch 24 stopped at step 5 (120 samples): 456 left of the 576, 228 a rank, so batches
  // 3..17 of 18 on two ranks of 16, of which --limit-train-batches 6 runs 3..5.
  const std::string odd = stopped(24, 5, ProcessGroup::single(), "logs-odd");
  const auto [odd_steps, odd_w] = resumed(config(16), odd, group(), "logs-odd-two");
  EXPECT_EQ(odd_steps, 5 + 3 + 6);
  EXPECT_TRUE(same_on_every_rank(static_cast<double>(odd_steps)));
  EXPECT_TRUE(same_on_every_rank(checksum(odd_w)));
}

// --profiler-trace under two ranks: one trace.json with each rank as a process, their steps
// aligned, and each gradient bucket's allreduce on a track of its own, launched during
// backward (overlap) or only after it (--no-overlap).
TEST_F(Ddp, ProfilerTraceShowsEveryRankAndTheBucketsOverlap) {
  for (bool overlap : {true, false}) {
    nn::Config c = config(16);
    c.epochs = 1;
    c.hidden = {512, 512};    // the first bucket (1 MB) cannot take the whole model
    c.bucket_cap_mb = 0.05;  // the others, one parameter each
    c.overlap = overlap;
    c.profiler_trace = "2:4";
    c.log_dir = root + (overlap ? "/logs-trace" : "/logs-trace-no-overlap");
    const nn::FitResult r = nn::Trainer(c, "", group()).fit();
    if (group().rank() != 0) continue;
    std::ifstream in(r.version_dir + "/trace.json");
    ASSERT_TRUE(in.good());
    const nlohmann::json j = nlohmann::json::parse(in);
    std::map<int, std::vector<std::pair<double, double>>> backward, steps;  // per rank
    std::map<int, std::vector<double>> launches;                               // per rank
    for (const auto& e : j.at("traceEvents")) {
      if (e.at("ph") != "X") continue;
      const int pid = e.at("pid").get<int>();
      const double ts = e.at("ts").get<double>(), end = ts + e.at("dur").get<double>();
      const std::string name = e.at("name");
      if (name == "backward") backward[pid].emplace_back(ts, end);
      if (name.rfind("step ", 0) == 0) steps[pid].emplace_back(ts, end);
      if (name.rfind("allreduce bucket ", 0) == 0) {
        EXPECT_GE(e.at("tid").get<int>(), trace::kBucketTrack);
        launches[pid].push_back(ts);
      }
    }
    for (int rank : {0, 1}) {
      ASSERT_EQ(steps[rank].size(), 2u) << "rank " << rank;
      ASSERT_EQ(backward[rank].size(), 2u) << "rank " << rank;
      // Each of the 4 buckets once a step: fc3 and fc2's bias; fc2's weight; fc1's bias; its
      // weight.
      EXPECT_EQ(launches[rank].size(), 2u * 4) << "rank " << rank;
      double before_end = 0;  // launches before the step's backward ended
      for (double t : launches[rank])
        for (const auto& [b0, b1] : backward[rank])
          if (t >= b0 && t < b1) ++before_end;
      if (overlap)
        EXPECT_GE(before_end, 2) << "rank " << rank << ": no allreduce started during backward";
      else
        EXPECT_EQ(before_end, 0) << "rank " << rank << ": --no-overlap started one in backward";
    }
    // Both ranks' steps begin together (the same clock from a barrier; the step's allreduces
    // keep them in lockstep): within a few milliseconds on one machine.
    EXPECT_NEAR(steps[0][1].first, steps[1][1].first, 20e3);
  }
}

// Weight averaging under data parallelism: every rank averages the same weights, so two ranks
// with half batches still end where one process with the whole batch does, with --ema-decay
// (validated and tested with the average) and with --swa-lrs (from epoch 2 of 3).
TEST_F(Ddp, WeightAveragingTwoRanksMatchOneRank) {
  for (const bool swa : {false, true}) {
    SCOPED_TRACE(swa ? "swa" : "ema");
    auto averaged = [&](int64_t batch, const std::string& logs) {
      nn::Config c = config(batch);
      c.log_dir = root + "/" + logs;
      c.epochs = 3;
      if (swa) {
        c.swa_lrs = 0.01;
        c.swa_epoch_start = "2";
        c.annealing_epochs = 1;
      } else {
        c.ema_decay = 0.7;
      }
      return c;
    };
    nn::Trainer ddp(averaged(16, swa ? "logs-swa" : "logs-ema"), "", group());
    const nn::FitResult r2 = ddp.fit();
    nn::Trainer single(averaged(32, swa ? "logs-swa-single" : "logs-ema-single"), "",
                       ProcessGroup::single());
    const nn::FitResult r1 = single.fit();
    EXPECT_LT(max_rel_diff(flat_weights(ddp), flat_weights(single)), 1e-5);
    EXPECT_EQ(r2.test.confusion.counts(), r1.test.confusion.counts());
    EXPECT_NEAR(r2.val.loss, r1.val.loss, 1e-5 * (1 + r1.val.loss));
  }
}

// --unfreeze-backbone-at-epoch under data parallelism: while frozen the reducer holds the head
// alone (a bucket waiting for a frozen weight's gradient would never be ready); at the unfreeze
// it is rebuilt over every parameter (PyTorch DDP would never allreduce the backbone's
// gradients and the ranks would drift apart). Two ranks with half batches end where one
// process with the whole batch does.
TEST_F(Ddp, UnfreezingTwoRanksMatchOneRank) {
  auto finetune = [&](int64_t batch, const std::string& logs) {
    nn::Config c = config(batch);
    c.log_dir = root + "/" + logs;
    c.epochs = 3;
    c.unfreeze_backbone_at_epoch = 1;
    return c;
  };
  nn::Trainer ddp(finetune(16, "logs-ft"), "", group());
  const nn::FitResult r2 = ddp.fit();
  nn::Trainer single(finetune(32, "logs-ft-single"), "", ProcessGroup::single());
  const nn::FitResult r1 = single.fit();
  EXPECT_LT(max_rel_diff(flat_weights(ddp), flat_weights(single)), 1e-5);
  EXPECT_EQ(r2.test.confusion.counts(), r1.test.confusion.counts());
}

// Accumulation under data parallelism (DDP's no_sync): two ranks with batches of 8 and two
// batches per step allreduce once per step and end where one process with batches of 32 does.
TEST_F(Ddp, AccumulatingTwoRanksMatchOneRankWithTheWholeBatch) {
  nn::Config two = config(8);
  two.accumulate_grad_batches = 2;
  two.limit_train_batches = "12";
  nn::Trainer ddp(two, "", group());
  const nn::FitResult r2 = ddp.fit();
  nn::Config one = config(32);
  one.log_dir = root + "/logs-single";
  nn::Trainer single(one, "", ProcessGroup::single());
  const nn::FitResult r1 = single.fit();
  EXPECT_EQ(r2.global_step, 2 * 6);
  EXPECT_EQ(r2.global_step, r1.global_step);
  EXPECT_LT(max_rel_diff(flat_weights(ddp), flat_weights(single)), 1e-5)
      << "after " << r2.global_step << " steps";
}

// --max-time under data parallelism: only rank 0's budget runs out (rank 1's is 10 minutes),
// and both ranks still end at the same step, through the per-step stop allreduce.
TEST_F(Ddp, MaxTimeOnOneRankStopsBothAtTheSameStep) {
  nn::Config c = config(16);
  c.epochs = 1000;
  c.max_time = group().rank() == 0 ? "0:01" : "10:00";
  nn::Trainer ddp(c, "", group());
  const nn::FitResult r = ddp.fit();
  EXPECT_EQ(r.limit, "max_time");
  EXPECT_GT(r.global_step, 0);
  EXPECT_LT(r.global_step, 1000 * 6);
  const double steps = static_cast<double>(r.global_step);
  EXPECT_TRUE(same_on_every_rank(steps));
  EXPECT_EQ(r.test.samples, 200);
}

// --test-ckpt best under data parallelism: rank 0 reads best.h5 (an epoch before the last) and
// every rank tests with those weights, the same bits on both.
TEST_F(Ddp, TestCkptBestTestsRankZerosBestWeightsOnEveryRank) {
  nn::Config c = config(16);
  c.epochs = 4;
  c.checkpoint_every = 1;
  c.checkpoint_monitor = "val_accuracy";  // reaches its best (a tie keeps the first) early
  c.test_ckpt = "best";
  nn::Trainer ddp(c, "", group());
  const nn::FitResult r = ddp.fit();
  const std::vector<double> w = flat_weights(ddp);
  EXPECT_TRUE(same_on_every_rank(checksum(w)));
  EXPECT_EQ(r.test.samples, 200);
  if (group().rank() == 0) {
    const std::string best = r.version_dir + "/checkpoints/best.h5";
    const nn::TrainState st = nn::load_checkpoint(best, ddp.model(), nullptr);
    EXPECT_LT(st.global_step, r.global_step);  // best.h5 is not the last epoch's weights
    EXPECT_EQ(flat_weights(ddp), w);           // and they are what was tested
  }
}

// profile.json under data parallelism: every action's total on this rank (rank 0) with the
// fastest and slowest rank's, which the two ranks' totals are: min <= rank 0's <= max, the mean
// halfway, and the slowest rank's total the max.
TEST_F(Ddp, ProfileHoldsEachActionsSpreadOverRanks) {
  nn::Config c = config(16);
  nn::Trainer ddp(c, "", group());
  const nn::FitResult r = ddp.fit();
  if (group().rank() != 0) return;
  std::ifstream f(r.version_dir + "/profile.json");
  ASSERT_TRUE(f.good()) << r.version_dir;
  const nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j.at("world"), 2);
  for (const char* a : {"data wait", "forward", "backward", "gradient sync", "optimizer step",
                        "validation", "test"}) {
    SCOPED_TRACE(a);
    ASSERT_TRUE(j.at("actions").contains(a));
    const auto& e = j.at("actions").at(a);
    const double mine = e.at("total_s"), lo = e.at("min_s"), hi = e.at("max_s"), mean = e.at("mean_s");
    EXPECT_LE(lo, mine);
    EXPECT_LE(mine, hi);
    EXPECT_NEAR(mean, (lo + hi) / 2, 1e-9 * (1 + hi));
    const int slowest = e.at("slowest_rank");
    EXPECT_TRUE(slowest == 0 || slowest == 1);
    if (slowest == 0) {
      EXPECT_EQ(mine, hi);
    } else {
      EXPECT_EQ(mine, lo);
    }
  }
  EXPECT_GT(j.at("actions").at("forward").at("calls").get<int>(), 0);
}

}  // namespace
}  // namespace mlai::dist
