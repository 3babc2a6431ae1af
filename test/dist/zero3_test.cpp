// --strategy zero3 (ZeRO stage 3, FSDP's FULL_SHARD) under mpirun -np 2 on the CPU: between
// uses each rank holds only the parameters it owns, and the two ranks still train as plain DDP
// does, bit for bit: the mlp as one unit (float32 SGD, fp16 AdamW, bf16 LAMB), resnet20 with a
// unit per residual block (with and without activation checkpointing, with a frozen stem, under
// each prefetch setting), vit_cifar and MobileNetV2 by their blocks; its checkpoints are DDP's,
// tensor for tensor. The root is kept from forward into backward, and evaluation gathers unit
// by unit over uneven shards. A weight average is sharded as the optimizer state is, under
// every stage.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "ddp_fixture.h"
#include "io/h5file.h"
#include "nn/trainer.h"

namespace mlai::dist {
namespace {

// Every dataset of a checkpoint's group (float32), by path.
std::vector<std::pair<std::string, std::vector<float>>> datasets(const std::string& file,
                                                                 const std::string& group) {
  io::H5Reader r(file);
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const std::string& path : r.list_datasets(group)) {
    if (r.info(path).dtype != io::H5Type::kFloat32) continue;  // (batch norm's step counts)
    std::vector<float> v(static_cast<size_t>(r.info(path).numel()));
    r.read(path, io::H5Type::kFloat32, v.data(), static_cast<int64_t>(v.size()));
    out.emplace_back(path, std::move(v));
  }
  return out;
}

// Between uses a rank holds the parameters it owns and none of the others' (what forward
// computes with, and the float32 masters); the two ranks' shares add up to the model.
void expect_sharded(nn::Trainer& t) {
  const nn::ZeroRedundancy* zero = t.zero();
  ASSERT_TRUE(zero && zero->parameters_sharded());
  const auto& params = t.optimizer().parameters();
  int released = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const bool mine = zero->owner(i) == group().rank();
    EXPECT_EQ(params[i].second.data().released(), !mine) << params[i].first;
    if (const autograd::Variable w = t.optimizer().working(i); w.defined()) {
      EXPECT_EQ(w.data().released(), !mine) << params[i].first;
    }
    released += params[i].second.data().released();
  }
  EXPECT_GT(allreduce_host(group(), released), 0);
  const auto held = static_cast<double>(zero->parameter_bytes());
  const auto whole = static_cast<double>(zero->total_parameter_bytes());
  EXPECT_LT(held, whole);
  EXPECT_EQ(allreduce_host(group(), held), whole);
}

// After fit() every rank holds every parameter again.
void expect_whole(nn::Trainer& t) {
  const nn::ZeroRedundancy* zero = t.zero();
  EXPECT_FALSE(zero->parameters_sharded());
  for (const auto& [n, v] : t.optimizer().parameters()) EXPECT_FALSE(v.data().released()) << n;
  EXPECT_EQ(zero->parameter_bytes(), zero->total_parameter_bytes());
}

// A short run: one epoch of three steps, two batches of validation and of test.
nn::Config short_run(nn::Config c) {
  c.epochs = 1;
  c.limit_train_batches = "3";
  c.limit_val_batches = "2";
  c.limit_test_batches = "2";
  return c;
}

// zero3's run ended where DDP's did: the same steps, weights (bit for bit) and test results.
void expect_ddps_run(nn::Trainer& zero, const nn::FitResult& rz, nn::Trainer& ddp,
                     const nn::FitResult& rd) {
  EXPECT_EQ(rz.global_step, rd.global_step);
  const std::vector<double> wz = flat_weights(zero), wd = flat_weights(ddp);
  EXPECT_EQ(wz, wd) << "max relative difference " << max_rel_diff(wz, wd);
  EXPECT_EQ(rz.test.confusion.counts(), rd.test.confusion.counts());
}

TEST_F(Ddp, Zero3TrainsTheMlpAsDdpBitForBit) {
  for (const PrecisionCase k : kPrecisionCases) {
    SCOPED_TRACE(::testing::Message() << k.optimizer << " at precision " << k.precision);
    auto cfg = [&](const std::string& s) {
      nn::Config c = config(16);
      c.strategy = s;
      c.hidden = {48, 24};
      c.log_dir = root + "/logs-" + s;
      c.experiment_name = k.optimizer;
      c.optimizer = k.optimizer;
      c.precision = k.precision;
      c.lr = k.lr;
      c.weight_decay = 0.01;
      c.checkpoint_every_n_steps = 4;  // (each save gathers every master)
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    nn::Trainer zero(cfg("zero3"), "", group());
    EXPECT_EQ(zero.zero()->unit_count(), 1);  // (no blocks: the mlp is the root unit)
    expect_sharded(zero);
    const nn::FitResult rz = zero.fit();
    expect_whole(zero);
    expect_ddps_run(zero, rz, ddp, rd);
    EXPECT_EQ(rz.val.confusion.counts(), rd.val.confusion.counts());
  }
}

// resnet20 (28x28 images): its nine BasicBlocks are units of their own, the stem, pooling and
// head the root's. Also under --activation-checkpointing (a block's backward runs it again,
// with its parameters gathered), with the stem frozen (the first block's input then needs no
// gradient, so nothing releases that unit in backward but the step's end), through
// --lr-find's restore, and with --sync-bn; under each of FSDP's prefetch orders, which change
// when a unit's broadcasts start and never what arrives; last.h5 holds DDP's tensors.
TEST_F(Ddp, Zero3TrainsAResNetUnitByUnitAsDdpBitForBit) {
  struct Case {
    const char* name;
    bool checkpointing;
    const char* freeze;
    const char* precision;
    bool sync_bn;
    const char* backward_prefetch;
    bool forward_prefetch;
  };
  for (const Case k : {Case{"plain", false, "", "32", false, "backward_pre", false},
                       Case{"checkpointed", true, "", "32", false, "backward_post", true},
                       Case{"frozen-stem-bf16", false, "conv1,bn1", "bf16", false, "none", false},
                       Case{"sync-bn", false, "", "32", true, "backward_pre", true},
                       Case{"no-prefetch", false, "", "32", false, "none", false}}) {
    SCOPED_TRACE(k.name);
    auto cfg = [&](const std::string& s) {
      nn::Config c = short_run(config(8));
      c.strategy = s;
      c.arch = "resnet20";
      c.optimizer = "adamw";
      c.lr = 0.002;
      c.activation_checkpointing = k.checkpointing;
      c.freeze = k.freeze;
      c.freeze_bn = !c.freeze.empty();  // (bn1's affine frozen too: no gradient reaches layer1)
      c.precision = k.precision;
      c.sync_bn = k.sync_bn;  // (batch norm's allreduces between the units' gathers)
      c.lr_find = k.checkpointing ? "apply" : "";
      if (s == "zero3") {
        c.backward_prefetch = k.backward_prefetch;
        c.forward_prefetch = k.forward_prefetch;
      }
      c.log_dir = root + "/logs-resnet-" + s;
      c.experiment_name = k.name;
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    nn::Trainer zero(cfg("zero3"), "", group());
    EXPECT_EQ(zero.zero()->unit_count(), 10);
    expect_sharded(zero);
    const nn::FitResult rz = zero.fit();
    expect_whole(zero);
    // Training held the root and one block at a time, and the next one while it was
    // prefetched, never the whole model.
    const std::string bp = k.backward_prefetch;
    const bool ahead = bp == "backward_pre" || k.forward_prefetch;
    EXPECT_EQ(zero.zero()->peak_units_held(), ahead ? 3 : 2);
    // From the second step on, each prefetch follows the first step's order, and each is used:
    // forward and BACKWARD_PRE gather the nine blocks ahead (after the root, or the block
    // before), BACKWARD_POST eight (the first block's release has nothing after it). The
    // forward prefetch works in validation's two batches too (not in the sanity check, before
    // any step).
    const int64_t per_step = (k.forward_prefetch ? 9 : 0) + (bp == "backward_pre"    ? 9
                                                             : bp == "backward_post" ? 8
                                                                                     : 0);
    const int64_t expected = per_step * (rz.global_step - 1) + (k.forward_prefetch ? 9 * 2 : 0);
    EXPECT_EQ(zero.zero()->prefetch_hits(), zero.zero()->prefetches());
    if (!k.checkpointing)  // (its lr-find steps prefetch too)
      EXPECT_EQ(zero.zero()->prefetches(), expected);
    else
      EXPECT_GT(zero.zero()->prefetches(), expected);
    expect_ddps_run(zero, rz, ddp, rd);
    if (group().rank() != 0) continue;
    for (const char* part : {"model", "optimizer"}) {
      const auto a = datasets(rz.version_dir + "/checkpoints/last.h5", part);
      const auto b = datasets(rd.version_dir + "/checkpoints/last.h5", part);
      EXPECT_FALSE(a.empty()) << part;
      ASSERT_EQ(a.size(), b.size()) << part;
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(a[i] == b[i]) << a[i].first << " (DDP's " << b[i].first << ") differs";
    }
  }
}

// The other block-built models: vit_cifar's six encoder blocks (layer norm, attention, GELU;
// the patch embedding, class token, position embedding and head are the root's) in fp16, and
// MobileNetV2's seventeen inverted residual blocks (depthwise convolutions, ReLU6) in bf16,
// each block a unit, train as DDP does, bit for bit, with every prefetch used.
TEST_F(Ddp, Zero3TrainsTheVitAndMobileNetV2AsDdpBitForBit) {
  struct Case {
    const char* arch;
    const char* precision;
    int units;
  };
  for (const Case k : {Case{"vit_cifar", "16", 7}, Case{"mobilenet_v2_cifar", "bf16", 18}}) {
    SCOPED_TRACE(k.arch);
    auto cfg = [&](const std::string& s) {
      nn::Config c = short_run(config(8));
      c.strategy = s;
      c.arch = k.arch;
      c.precision = k.precision;
      c.optimizer = "adamw";
      c.lr = 0.001;
      c.log_dir = root + "/logs-blocks-" + s;
      c.experiment_name = k.arch;
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    nn::Trainer zero(cfg("zero3"), "", group());
    EXPECT_EQ(zero.zero()->unit_count(), k.units);
    expect_sharded(zero);
    const nn::FitResult rz = zero.fit();
    expect_whole(zero);
    EXPECT_EQ(zero.zero()->peak_units_held(), 3);
    EXPECT_EQ(zero.zero()->prefetches(), (k.units - 1) * (rz.global_step - 1));
    EXPECT_EQ(zero.zero()->prefetch_hits(), zero.zero()->prefetches());
    expect_ddps_run(zero, rz, ddp, rd);
  }
}

// FSDP keeps the root's parameters from its forward into backward, which starts with it: after
// a training forward the root is held and every block freed (each after its own forward);
// backward gathers and frees the blocks again and leaves the root, whose input (the images)
// needs no gradient, for the step's end.
TEST_F(Ddp, Zero3KeepsTheRootFromForwardIntoBackward) {
  nn::Config c = config(8);
  c.strategy = "zero3";
  c.arch = "resnet20";
  c.backward_prefetch = "none";
  nn::Trainer t(c, "", group());
  nn::ZeroRedundancy* zero = t.zero();
  ASSERT_EQ(zero->unit_count(), 10);
  auto held = [&] {
    std::vector<bool> h;
    for (int u = 0; u < zero->unit_count(); ++u) h.push_back(zero->unit_held(u));
    return h;
  };
  std::vector<bool> root_only(10, false);
  root_only[0] = true;
  EXPECT_EQ(held(), std::vector<bool>(10, false));
  tensor::Generator gen(7);
  const autograd::Variable x(tensor::Tensor::normal({4, 28, 28, 1}, 0, 1, gen));
  autograd::Variable y = t.model()(x);
  EXPECT_EQ(held(), root_only);
  autograd::sum(y).backward();
  EXPECT_EQ(held(), root_only);
  EXPECT_EQ(zero->peak_units_held(), 2);
  zero->release_units();
  EXPECT_EQ(held(), std::vector<bool>(10, false));
  // Evaluation gathers unit by unit too, the root kept until the pass ends.
  t.model().eval();
  {
    autograd::NoGradGuard no_grad;
    t.model()(x);
  }
  EXPECT_EQ(held(), root_only);
  zero->release_units();
  t.model().train();
  EXPECT_EQ(zero->peak_units_held(), 2);
  expect_sharded(t);
}

// Validation and the sanity check gather unit by unit as training does, never the whole model
// (the test runs after fit() has gathered it for good). Their shards are not padded: with 65 validation images rank 0 has five batches
// of 8 and rank 1 four, so rank 1 runs one blank forward more to join rank 0's gathers (without
// it the ranks would wait on each other until --dist-timeout). The metrics are DDP's exactly.
TEST_F(Ddp, Zero3EvaluatesUnitByUnitOverUnevenShards) {
  auto cfg = [&](const std::string& s) {
    nn::Config c = config(8);
    c.strategy = s;
    c.arch = "resnet20";
    c.epochs = 1;
    c.limit_train_batches = "2";
    c.val_split = 65.0 / 640.0;
    c.num_sanity_val_steps = -1;  // (the whole validation split before training too)
    c.precision = "bf16";  // (the blank image in the loader's dtype)
    c.dist_timeout = 60;
    c.log_dir = root + "/logs-eval-" + s;
    return c;
  };
  nn::Trainer ddp(cfg("ddp"), "", group());
  ASSERT_EQ(ddp.data().val.count, 65);
  const nn::FitResult rd = ddp.fit();
  nn::Trainer zero(cfg("zero3"), "", group());
  const nn::FitResult rz = zero.fit();
  EXPECT_EQ(zero.zero()->peak_units_held(), 3);  // (the root, a block, the next prefetched)
  EXPECT_EQ(rz.val.confusion.counts(), rd.val.confusion.counts());
  EXPECT_EQ(rz.val.loss, rd.val.loss);
  EXPECT_EQ(rz.test.confusion.counts(), rd.test.confusion.counts());
  EXPECT_EQ(rz.val.samples, 65);
}

// A weight average under ZeRO is sharded as the optimizer state is: each rank keeps the average
// of the parameters it owns (and of every buffer), updates and swaps those alone, and a
// checkpoint's write gathers the others' to rank 0. --ema-decay (the mlp in fp16, whose masters
// are sharded too: validated with the average, checkpointed with the training weights beside it
// mid-epoch and at each epoch's end, the model takes it at the end) and --swa-lrs (resnet20:
// averaged each epoch, then batch norm recomputed in a pass through the units' gathers and the
// average checkpointed beside the weights): DDP's run bit for bit under each stage, and DDP's
// checkpoints, every tensor of every group.
TEST_F(Ddp, ZeroShardsAWeightAverageAndTrainsAsDdpBitForBit) {
  struct Case {
    const char* name;
    const char* arch;
    const char* precision;
    bool swa;
  };
  for (const Case k : {Case{"ema-mlp-fp16", "mlp", "16", false},
                       Case{"swa-resnet20", "resnet20", "32", true}}) {
    SCOPED_TRACE(k.name);
    auto cfg = [&](const std::string& s) {
      nn::Config c = k.swa ? short_run(config(8)) : config(8);
      c.strategy = s;
      c.arch = k.arch;
      c.hidden = {48, 24};
      c.optimizer = "adamw";
      c.lr = 0.003;
      c.precision = k.precision;
      if (k.swa) {
        c.epochs = 3;
        c.swa_lrs = 0.001;
        c.swa_epoch_start = "2";
      } else {
        c.ema_decay = 0.9;
        c.checkpoint_every_n_steps = 4;
        c.save_top_k = 1;
      }
      c.log_dir = root + "/logs-average-" + s;
      c.experiment_name = k.name;
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    for (const char* strategy : {"zero1", "zero2", "zero3"}) {
      SCOPED_TRACE(strategy);
      nn::Trainer zero(cfg(strategy), "", group());
      ASSERT_NE(zero.zero(), nullptr);
      // This rank's share of the average: its own parameters' (and every buffer's).
      std::map<std::string, bool> mine;
      const auto& params = zero.optimizer().parameters();
      for (size_t i = 0; i < params.size(); ++i)
        mine[params[i].first] = zero.zero()->owner(i) == group().rank();
      int dropped = 0;
      for (const auto& [n, t] : zero.weight_average()->named()) {
        const bool parameter = mine.count(n) > 0;
        EXPECT_EQ(t->defined(), !parameter || mine[n]) << n;
        dropped += !t->defined();
      }
      EXPECT_GT(dropped, 0);
      EXPECT_GT(allreduce_host(group(), dropped), static_cast<double>(dropped));
      EXPECT_EQ(zero.zero()->masters_sharded(), std::string(k.precision) != "32");
      const nn::FitResult rz = zero.fit();
      expect_ddps_run(zero, rz, ddp, rd);
      EXPECT_EQ(rz.val.confusion.counts(), rd.val.confusion.counts());
      EXPECT_EQ(rz.val.loss, rd.val.loss);
      for (const auto& [n, t] : zero.weight_average()->named())  // (rank 0 dropped them again)
        EXPECT_EQ(t->defined(), mine.count(n) == 0 || mine[n]) << n;
      if (group().rank() != 0) continue;
      for (const char* file : {"last.h5", "best.h5"})
        for (const char* part : {"model", "optimizer", k.swa ? "swa_average" : "current_model"}) {
          const auto a = datasets(rz.version_dir + "/checkpoints/" + file, part);
          const auto b = datasets(rd.version_dir + "/checkpoints/" + file, part);
          EXPECT_FALSE(a.empty()) << file << " " << part;
          EXPECT_TRUE(a == b) << file << " " << part << " differs from DDP's";
        }
    }
  }
}

// A zero3 run stopped and resumed ends where the uninterrupted DDP run does, bit for bit, with
// each rank's share of the average read back: --ema-decay stopped at step 4 (the average from
// the checkpoint's weights, the training weights from its current_model), --swa-lrs stopped in
// its second averaged epoch (the average so far from its swa_average group).
TEST_F(Ddp, Zero3ResumesAWeightAverageExactly) {
  for (const bool swa : {false, true}) {
    SCOPED_TRACE(swa ? "--swa-lrs" : "--ema-decay");
    auto cfg = [&](const std::string& s, const std::string& logs) {
      nn::Config c = config(8);
      c.strategy = s;
      c.hidden = {48, 24};
      c.optimizer = "adamw";
      c.lr = 0.003;
      c.precision = "bf16";
      if (swa) {
        c.epochs = 3;
        c.swa_lrs = 0.001;
        c.swa_epoch_start = "2";
      } else {
        c.ema_decay = 0.9;
      }
      c.log_dir = root + "/" + logs;
      c.experiment_name = swa ? "swa" : "ema";
      return c;
    };
    nn::Trainer ddp(cfg("ddp", "logs-average-ddp"), "", group());
    const nn::FitResult rd = ddp.fit();
    nn::Config stop = cfg("zero3", "logs-average-stopped");
    stop.max_steps = swa ? 15 : 4;  // (six steps an epoch: SWA averages from step 6)
    nn::Trainer(stop, "", group()).fit();
    nn::Config resume = cfg("zero3", "logs-average-resumed");
    resume.resume = under_rank0_root("logs-average-stopped/" + stop.experiment_name +
                                     "/version_0/checkpoints/last.h5");
    nn::Trainer zero(resume, "", group());
    const nn::FitResult rz = zero.fit();
    expect_ddps_run(zero, rz, ddp, rd);
    EXPECT_EQ(rz.val.loss, rd.val.loss);
  }
}

}  // namespace
}  // namespace mlai::dist
