// --strategy zero1 and zero2 (nn/zero.h) under mpirun -np 2 on the CPU: each rank keeps half
// the optimizer state (under zero2 half the gradients, under mixed precision half the float32
// masters) and the two ranks end with plain DDP's weights bit for bit (float32 SGD, fp16 AdamW,
// bf16 LAMB); a checkpoint holds the whole state, so a ZeRO run resumes exactly, under DDP or
// on one process too. zero3's checkpoints are here; its training is in zero3_test.cpp.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ddp_fixture.h"
#include "io/h5file.h"
#include "nn/trainer.h"

namespace mlai::dist {
namespace {

nn::Config with_strategy(nn::Config c, const std::string& strategy, const std::string& logs) {
  c.strategy = strategy;
  c.hidden = {48, 24};  // six parameters to share out
  c.log_dir = logs;
  return c;
}

// Every optimizer/ (or other group's) dataset of a checkpoint (float32), by path.
std::vector<std::pair<std::string, std::vector<float>>> optimizer_state(
    const std::string& file, const std::string& group = "optimizer") {
  io::H5Reader r(file);
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const std::string& path : r.list_datasets(group)) {
    std::vector<float> v(static_cast<size_t>(r.info(path).numel()));
    r.read(path, io::H5Type::kFloat32, v.data(), static_cast<int64_t>(v.size()));
    out.emplace_back(path, std::move(v));
  }
  return out;
}

TEST_F(Ddp, ZeroStepsAsDdpBitForBitWithHalfTheState) {
  for (const PrecisionCase k : kPrecisionCases) {
    // zero1 clips by the norm of every gradient, whoever owns it: DDP's norm, to the bit.
    // zero2 adds the ranks' shares of the norm in another order (ZeroStage2Clips... below),
    // so it runs unclipped here.
    for (const std::string strategy : {"zero1", "zero2"}) {
      SCOPED_TRACE(::testing::Message()
                   << strategy << ", " << k.optimizer << " at precision " << k.precision);
      const bool sharded = strategy == "zero2";
      auto cfg = [&](const std::string& s) {
        nn::Config c = with_strategy(config(16), s, root + "/logs-" + s);
        c.optimizer = k.optimizer;
        c.precision = k.precision;
        c.lr = k.lr;
        c.weight_decay = 0.01;
        c.gradient_clip_val = sharded ? 0.0 : 1.0;
        c.experiment_name = k.optimizer;
        c.experiment_name += "-" + strategy;
        return c;
      };
      nn::Trainer ddp(cfg("ddp"), "", group());
      const nn::FitResult rd = ddp.fit();
      nn::Trainer zero(cfg(strategy), "", group());
      const nn::FitResult rz = zero.fit();
      EXPECT_EQ(rz.global_step, rd.global_step);
      const std::vector<double> wz = flat_weights(zero), wd = flat_weights(ddp);
      ASSERT_EQ(wz.size(), wd.size());
      EXPECT_EQ(wz, wd) << "max relative difference " << max_rel_diff(wz, wd);
      EXPECT_TRUE(same_on_every_rank(checksum(wz)));
      EXPECT_EQ(rz.test.confusion.counts(), rd.test.confusion.counts());
      // Each rank holds the state of its own parameters only: less than all of it, and the two
      // halves add up to what DDP keeps on each rank.
      const auto mine = static_cast<double>(zero.optimizer().state_bytes());
      const auto whole = static_cast<double>(ddp.optimizer().state_bytes());
      EXPECT_GT(mine, 0);
      EXPECT_LT(mine, whole);
      EXPECT_EQ(allreduce_host(group(), mine), whole);
      if (!sharded) continue;
      // Under zero2 the optimizer reads this rank's gradients only: the others' were not kept.
      double grads = 0, all = 0;
      for (const Tensor& g : zero.optimizer().gradients()) grads += static_cast<double>(g.numel());
      for (const auto& [n, v] : zero.model().named_parameters())
        all += static_cast<double>(v.numel());
      EXPECT_LT(grads, all);
      EXPECT_EQ(allreduce_host(group(), grads), all);
    }
  }
}

TEST_F(Ddp, ZeroRedundancyCheckpointsHoldTheWholeStateAndResumeAnywhere) {
  auto cfg = [&](const std::string& strategy, const std::string& logs) {
    nn::Config c = with_strategy(config(16), strategy, root + "/" + logs);
    c.optimizer = "adam";
    c.lr = 0.003;
    return c;
  };
  nn::Trainer full(cfg("zero1", "logs-full"), "", group());
  const int64_t steps = full.fit().global_step;
  const std::vector<double> want = flat_weights(full);

  // Both strategies stopped at step 4: the same checkpointed state, every tensor of it.
  auto stopped = [&](const std::string& strategy) {
    nn::Config c = cfg(strategy, "logs-stopped-" + strategy);
    c.max_steps = 4;
    return nn::Trainer(c, "", group()).fit().version_dir + "/checkpoints/last.h5";
  };
  const std::string from_zero = stopped("zero1"), from_ddp = stopped("ddp");
  const std::string from_zero2 = stopped("zero2"), from_zero3 = stopped("zero3");
  const std::string shared =
      under_rank0_root("logs-stopped-zero1/default/version_0/checkpoints/last.h5");
  if (group().rank() == 0) {
    EXPECT_EQ(shared, from_zero);
    const auto z = optimizer_state(from_zero), d = optimizer_state(from_ddp);
    EXPECT_EQ(z.size(), 12u);  // six parameters' two moments
    ASSERT_EQ(z.size(), d.size());
    for (size_t i = 0; i < z.size(); ++i) {
      EXPECT_EQ(z[i].first, d[i].first);
      EXPECT_EQ(z[i].second, d[i].second) << z[i].first;
    }
    EXPECT_EQ(optimizer_state(from_zero2), z);  // (zero2 shards the gradients, not the state)
    EXPECT_EQ(optimizer_state(from_zero3), z);  // (zero3 the parameters too: gathered to write)
    EXPECT_EQ(optimizer_state(from_zero3, "model"), optimizer_state(from_ddp, "model"));
  }

  auto resumed = [&](nn::Config c, ProcessGroup& g) {
    c.resume = shared;
    nn::Trainer t(c, "", g);
    const int64_t s = t.fit().global_step;
    return std::pair<int64_t, std::vector<double>>(s, flat_weights(t));
  };
  // Under zero1, zero2, zero3 and DDP on the same two ranks: the uninterrupted run's weights.
  for (const char* strategy : {"zero1", "zero2", "zero3", "ddp"}) {
    SCOPED_TRACE(strategy);
    const auto [s, w] = resumed(cfg(strategy, std::string("logs-resumed-") + strategy), group());
    EXPECT_EQ(s, steps);
    EXPECT_EQ(w, want) << "max relative difference " << max_rel_diff(w, want);
  }
  // On one process with twice the batch: the same training, summed in another order.
  if (group().rank() == 0) {
    nn::Config one = cfg("ddp", "logs-resumed-one");
    one.batch_size = 32;
    const auto [s, w] = resumed(one, ProcessGroup::single());
    EXPECT_EQ(s, steps);
    EXPECT_LT(max_rel_diff(w, want), 1e-5);
  }
}

// What else touches the optimizer state or writes checkpoints: --lr-find (snapshots and
// restores the state, steps through the broadcasts), --ema-decay (checkpoints the average),
// --save-top-k 2 and mid-epoch checkpoints (each save() a collective under zero1; rank 0 links
// best.h5 where the others save it): the same run as under DDP, bit for bit, under zero1,
// zero2 and zero3.
TEST_F(Ddp, ZeroRedundancyKeepsLrFindWeightAveragingAndTopKCheckpoints) {
  auto cfg = [&](const std::string& strategy) {
    nn::Config c = with_strategy(config(16), strategy, root + "/logs-" + strategy);
    c.optimizer = "adamw";
    c.lr_find = "apply";
    c.ema_decay = 0.9;
    c.save_top_k = 2;
    c.checkpoint_every_n_steps = 4;
    c.epochs = 3;
    return c;
  };
  nn::Trainer ddp(cfg("ddp"), "", group());
  const nn::FitResult rd = ddp.fit();
  // (zero2: the gradients sharded too; zero3: the parameters, and the average is per owner)
  for (const char* strategy : {"zero1", "zero2", "zero3"}) {
    SCOPED_TRACE(strategy);
    nn::Trainer zero(cfg(strategy), "", group());
    const nn::FitResult rz = zero.fit();
    EXPECT_EQ(rz.global_step, rd.global_step);
    EXPECT_EQ(flat_weights(zero), flat_weights(ddp));
    EXPECT_EQ(rz.test.confusion.counts(), rd.test.confusion.counts());
    if (group().rank() == 0) {
      int kept = 0;
      for (const auto& e : fs::directory_iterator(rz.version_dir + "/checkpoints"))
        kept += e.path().filename().string().rfind("epoch=", 0) == 0;
      EXPECT_EQ(kept, 2);
      EXPECT_TRUE(fs::exists(rz.version_dir + "/checkpoints/best.h5"));
      EXPECT_EQ(optimizer_state(rz.version_dir + "/checkpoints/last.h5"),
                optimizer_state(rd.version_dir + "/checkpoints/last.h5"));
    }
  }
}

// Under mixed precision ZeRO shards the float32 masters too: while training, each rank holds
// the masters of its own parameters only (the others' memory released) and computes with every
// working copy; fit() ends with every master on every rank again. With --ema-decay too: the
// average is sharded as the masters are (zero3_test.cpp's ZeroShardsAWeightAverageAndTrainsAsDdpBitForBit
// trains with it).
TEST_F(Ddp, ZeroShardsTheFloat32MastersUnderMixedPrecision) {
  for (const std::string strategy : {"zero1", "zero2"}) {
    for (const bool ema : {false, true}) {
      SCOPED_TRACE(strategy + (ema ? " with --ema-decay" : ""));
      nn::Config c = with_strategy(config(16), strategy, root + "/logs-masters-" + strategy);
      c.precision = "16";
      c.optimizer = "adamw";
      c.lr = 0.003;
      c.ema_decay = ema ? 0.9 : 0.0;
      nn::Trainer t(c, "", group());
      const nn::ZeroRedundancy* zero = t.zero();
      ASSERT_NE(zero, nullptr);
      EXPECT_TRUE(zero->masters_sharded());
      const auto params = t.optimizer().parameters();
      int released = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        ASSERT_TRUE(t.optimizer().working(i).defined()) << params[i].first;
        EXPECT_FALSE(t.optimizer().working(i).data().released()) << params[i].first;
        const bool mine = zero->owner(i) == group().rank();
        EXPECT_EQ(params[i].second.data().released(), !mine) << params[i].first;
        released += params[i].second.data().released();
        if (!ema) continue;
        for (const auto& [n, a] : t.weight_average()->named())
          if (n == params[i].first) {
            EXPECT_EQ(a->defined(), mine) << n;
          }
      }
      const auto held = static_cast<double>(zero->master_bytes());
      const auto whole = static_cast<double>(zero->total_master_bytes());
      // (both ranks release some: six tensors over two ranks)
      EXPECT_GT(allreduce_host(group(), released), 0);
      EXPECT_LT(held, whole);
      EXPECT_EQ(allreduce_host(group(), held), whole);
      t.fit();
      for (const auto& [n, v] : params) EXPECT_FALSE(v.data().released()) << n;
      EXPECT_EQ(zero->master_bytes(), zero->total_master_bytes());
      EXPECT_TRUE(same_on_every_rank(checksum(flat_weights(t))));
    }
  }
}

// A checkpoint's write gathers to rank 0 alone (FSDP's FULL_STATE_DICT, rank0_only and
// offload_to_cpu): while a GatheredState lives, rank 0 holds every parameter's float32 values
// (the owners' own, checksum for checksum) and every parameter's optimizer state, and rank 1
// no more than its share; afterwards rank 0 is back to its share. zero1 and zero2 in fp16
// (the masters sharded), zero3 in fp32 (the parameters) and bf16 (both).
TEST_F(Ddp, ZeroCheckpointsGatherOnRankZeroAlone) {
  struct Case {
    const char* strategy;
    const char* precision;
  };
  for (const Case k : {Case{"zero1", "16"}, Case{"zero2", "16"}, Case{"zero3", "32"},
                       Case{"zero3", "bf16"}}) {
    SCOPED_TRACE(std::string(k.strategy) + " at precision " + k.precision);
    nn::Config c = with_strategy(config(16), k.strategy, root + "/logs-rank0-" + k.strategy);
    c.precision = k.precision;
    c.optimizer = "adamw";
    nn::Trainer t(c, "", group());
    nn::ZeroRedundancy* zero = t.zero();
    ASSERT_NE(zero, nullptr);
    auto& opt = t.optimizer();
    const auto params = opt.parameters();
    // Each owner's first moments made to differ from parameter to parameter (not zeros).
    for (size_t i = 0; i < params.size(); ++i)
      if (zero->owner(i) == group().rank())
        opt.state_of(i)[0]->copy_from(tensor::Tensor::full(params[i].second.shape(), 0.5 + i));
    const bool rank0 = group().rank() == 0;
    std::vector<double> weights(params.size()), moments(params.size());
    std::vector<bool> released(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      const bool mine = zero->owner(i) == group().rank();
      released[i] = params[i].second.data().released();
      EXPECT_EQ(released[i], !mine) << params[i].first;
      weights[i] = allreduce_host(
          group(), mine ? checksum(params[i].second.data().to_double_vector()) : 0.0);
      moments[i] = allreduce_host(
          group(), mine ? checksum(opt.state_of(i)[0]->to_double_vector()) : 0.0);
    }
    const int64_t held = zero->master_bytes();
    {
      const nn::GatheredState whole(zero);
      for (size_t i = 0; i < params.size(); ++i) {
        const tensor::Tensor& w = params[i].second.data();
        EXPECT_EQ(w.released(), !rank0 && released[i]) << params[i].first;
        if (!rank0) continue;
        EXPECT_EQ(checksum(w.to_double_vector()), weights[i]) << params[i].first;
        ASSERT_TRUE(opt.state_of(i)[0]->defined()) << params[i].first;
        EXPECT_EQ(checksum(opt.state_of(i)[0]->to_double_vector()), moments[i]) << params[i].first;
      }
      EXPECT_EQ(zero->master_bytes(), held);  // (rank 0's copies wait on the host)
    }
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_EQ(params[i].second.data().released(), released[i]) << params[i].first;
    EXPECT_EQ(zero->master_bytes(), held);
  }
}

// With the masters sharded, what reads or writes them mid-training: --lr-find (restores the
// weights it changed: each owner its masters, the others its working copies), mid-epoch and
// top-k checkpoints (every master gathered for the write), --log-histograms (every master on
// rank 0) and the final test with best.h5's weights (loaded into every master): DDP's run,
// bit for bit, and its checkpoints, every tensor of them.
TEST_F(Ddp, ZeroShardedMastersKeepLrFindCheckpointsAndHistograms) {
  auto cfg = [&](const std::string& strategy) {
    nn::Config c = with_strategy(config(16), strategy, root + "/logs-sharded-" + strategy);
    c.optimizer = "adamw";
    c.precision = "16";
    c.lr_find = "apply";
    c.save_top_k = 2;
    c.checkpoint_every_n_steps = 4;
    c.log_histograms = true;
    c.test_ckpt = "best";
    c.epochs = 3;
    return c;
  };
  nn::Trainer ddp(cfg("ddp"), "", group());
  const nn::FitResult rd = ddp.fit();
  for (const char* strategy : {"zero1", "zero2"}) {
    SCOPED_TRACE(strategy);
    nn::Trainer zero(cfg(strategy), "", group());
    ASSERT_TRUE(zero.zero() && zero.zero()->masters_sharded());
    const nn::FitResult rz = zero.fit();
    EXPECT_EQ(rz.global_step, rd.global_step);
    EXPECT_EQ(flat_weights(zero), flat_weights(ddp));
    EXPECT_EQ(rz.test.confusion.counts(), rd.test.confusion.counts());
    if (group().rank() != 0) continue;
    for (const char* file : {"last.h5", "best.h5"})
      for (const char* part : {"model", "optimizer"}) {
        const std::string z = rz.version_dir + "/checkpoints/" + file;
        const std::string d = rd.version_dir + "/checkpoints/" + file;
        const auto a = optimizer_state(z, part), b = optimizer_state(d, part);
        EXPECT_FALSE(a.empty()) << file << " " << part;
        ASSERT_EQ(a.size(), b.size()) << file << " " << part;
        for (size_t i = 0; i < a.size(); ++i)
          EXPECT_TRUE(a[i] == b[i])
              << file << ": " << a[i].first << " (DDP's " << b[i].first << ") differs";
      }
  }
}

// Gradient-norm clipping, accumulation and the logged gradient norm (zero2 and zero3): the
// whole gradient's norm, summed over the ranks' shares (float32 sums in another order than DDP's single pass, hence a
// bound instead of equal bits). Were each rank to clip by its own share's norm, or to drop an
// unstepped backward, the weights would part by far more.
TEST_F(Ddp, ZeroStage2ClipsAndAccumulatesByTheWholeGradient) {
  for (const int accumulate : {1, 2}) {
    SCOPED_TRACE("accumulating " + std::to_string(accumulate) + " batches");
    auto cfg = [&](const std::string& strategy) {
      nn::Config c = with_strategy(config(16), strategy, root + "/logs-clip-" + strategy);
      c.optimizer = "adamw";
      c.lr = 0.01;
      c.gradient_clip_val = 0.05;  // (clips every step: the gradients' norm is above it)
      c.accumulate_grad_batches = accumulate;
      c.experiment_name = "accumulate" + std::to_string(accumulate);
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    nn::Trainer zero(cfg("zero2"), "", group());
    const nn::FitResult rz = zero.fit();
    EXPECT_EQ(rz.global_step, rd.global_step);
    const std::vector<double> wz = flat_weights(zero), wd = flat_weights(ddp);
    EXPECT_LT(max_rel_diff(wz, wd), 1e-5);
    EXPECT_TRUE(same_on_every_rank(checksum(wz)));
    // zero3 reduces, clips and accumulates as zero2 does (its parameters gathered for each
    // forward and backward, not broadcast after the step): zero2's weights, bit for bit.
    nn::Trainer zero3(cfg("zero3"), "", group());
    zero3.fit();
    EXPECT_EQ(flat_weights(zero3), wz);
  }
}

}  // namespace
}  // namespace mlai::dist
