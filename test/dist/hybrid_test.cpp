// Hybrid sharding (--shard-size, --strategy hybrid_shard; FSDP's HYBRID_SHARD) under mpirun on
// the CPU, at 2 ranks (groups of one: every rank a whole replica, its gradients summed across)
// and at 4 (two groups of two: each shards the model, the pairs holding the same shard sum
// across). Split communicators reach only their group; the reducer sums within the group, and
// across the groups on a step's last backward only; the groups train as DDP does (bit for bit
// at 2 ranks, where every sum adds the same two numbers; to float32's rounding at 4, where the
// sums' order differs), gradient accumulation included; each rank keeps its group's share; a
// checkpoint holds the whole state and resumes under other strategies.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "ddp_fixture.h"
#include "dist/reducer.h"
#include "dist/communicator.h"
#include "io/h5file.h"
#include "nn/trainer.h"

namespace mlai::dist {
namespace {

class Hybrid : public Ddp {
 protected:
  bool runs_at(int world) const override { return world == 2 || world == 4; }
  // Two groups: of one rank at world 2, of two at world 4.
  static int shard() { return group().world() / 2; }
  // What the ranks' sums may differ by from DDP's: nothing where they add the same pairs.
  static double tolerance() { return group().world() == 2 ? 0.0 : 1e-5; }
  nn::Config hybrid(nn::Config c, const std::string& strategy, const std::string& logs) const {
    c.strategy = strategy;
    c.shard_size = std::to_string(shard());
    c.hidden = {48, 24};  // six parameters to share out
    c.log_dir = root + "/" + logs;
    return c;
  }
};

// Random values of rank r's own (never zeros), the same wherever they are made.
std::vector<float> values_of(int r, size_t n) {
  std::mt19937 gen(static_cast<unsigned>(1234 + r));
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}

TEST_F(Hybrid, SplitCommunicatorsReachOnlyTheirGroup) {
  auto comm = make_communicator("mpi", tensor::Device::cpu(), group());
  const int world = group().world(), rank = group().rank(), half = world / 2;
  const auto halves = comm->split(rank / half, rank);  // consecutive ranks
  const auto strided = comm->split(rank % half, rank);  // the same place in each half
  const auto reversed = comm->split(0, -rank);          // everyone, ranked backwards
  EXPECT_EQ(halves->world(), half);
  EXPECT_EQ(halves->rank(), rank % half);
  EXPECT_EQ(strided->world(), 2);
  EXPECT_EQ(strided->rank(), rank / half);
  EXPECT_EQ(reversed->world(), world);
  EXPECT_EQ(reversed->rank(), world - 1 - rank);

  // An allreduce sums its group's values alone.
  constexpr size_t n = 37;
  auto mine = [&] { return tensor::Tensor::from_vector(values_of(rank, n), {static_cast<int64_t>(n)}); };
  auto sum_of = [&](const std::vector<int>& ranks) {
    std::vector<float> s(n, 0.0f);
    for (int r : ranks) {
      const std::vector<float> v = values_of(r, n);
      for (size_t i = 0; i < n; ++i) s[i] += v[i];
    }
    return s;
  };
  std::vector<int> my_half, my_column;
  for (int r = 0; r < world; ++r) {
    if (r / half == rank / half) my_half.push_back(r);
    if (r % half == rank % half) my_column.push_back(r);
  }
  tensor::Tensor a = mine();
  halves->allreduce_sum(a);
  const std::vector<float> got_half = a.to_vector<float>(), want_half = sum_of(my_half);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got_half[i], want_half[i], 1e-5f) << i;
  tensor::Tensor b = mine();
  strided->allreduce_sum(b);
  const std::vector<float> got_column = b.to_vector<float>(), want_column = sum_of(my_column);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got_column[i], want_column[i], 1e-5f) << i;

  // Broadcasts and sends name the subgroup's ranks: the reversed communicator's rank 0 is the
  // job's last rank, and rank 1 of each column is its rank in the second half.
  tensor::Tensor c = mine();
  reversed->broadcast(c, 0);
  EXPECT_EQ(c.to_vector<float>(), values_of(world - 1, n));
  tensor::Tensor d = mine();
  strided->broadcast(d, 1);
  EXPECT_EQ(d.to_vector<float>(), values_of(rank % half + half, n));
  // A reduce-scatter within the column: each of its two ranks gets its segment's sum.
  tensor::Tensor e = mine();
  tensor::Tensor part = tensor::Tensor::zeros({strided->rank() == 0 ? 20 : 17});
  strided->reduce_scatter_async(e, part, {20, 17})->wait();
  const std::vector<float> got_part = part.to_vector<float>();
  for (size_t i = 0; i < got_part.size(); ++i)
    EXPECT_NEAR(got_part[i], want_column[i + (strided->rank() == 0 ? 0 : 20)], 1e-5f) << i;

  // A world of one (a process's own reference run inside the job) splits into itself, without
  // touching the job's other ranks.
  const auto alone = make_communicator("mpi", tensor::Device::cpu(), ProcessGroup::single())->split(5, 0);
  EXPECT_EQ(alone->world(), 1);
  tensor::Tensor f = mine();
  alone->allreduce_sum(f);
  EXPECT_EQ(f.to_vector<float>(), values_of(rank, n));
}

// The reducer over a shard group with replicas: a step's last backward sums each gradient over
// every rank (the group's reduce-scatter, then the allreduce across the groups); a backward
// that does not step keeps the group's sum alone; an inf on one rank of the last group reaches
// every owner in every group (so every group's loss scaler skips the step).
TEST_F(Hybrid, ReducerSumsWithinTheGroupAndAcrossOnAStepsLastBackward) {
  tensor::Generator gen(3);
  const std::vector<int64_t> sizes = {30000, 50000, 20000, 40000, 10000};
  const std::vector<int> owner = nn::partition_parameters(sizes, shard());
  std::vector<std::pair<std::string, autograd::Variable>> params;
  for (size_t i = 0; i < sizes.size(); ++i)
    params.emplace_back(std::string(1, 'w').append(std::to_string(i)),
                        autograd::Variable(Tensor::uniform({sizes[i]}, -1, 1, gen), true));
  const int rank = group().rank(), world = group().world();
  auto comm = make_communicator("mpi", tensor::Device::cpu(), group());
  const auto groups = comm->split(rank / shard(), rank);
  const auto replicas = comm->split(rank % shard(), rank);
  ReducerOptions ro;
  ro.bucket_cap_mb = 0.3;
  ro.first_bucket_mb = 0.05;
  ro.owner = owner;
  ro.replicas = replicas.get();
  Reducer red(params, *groups, ro);
  // loss = (rank + 1) P, P = s4 (s3 (s2 (s1 s1))), s_i = sum(w_i): w_i's gradient on a rank is
  // (rank + 1) P / s_i (w1's twice that).
  std::vector<double> s(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i)
    for (double x : params[i].second.data().to_double_vector()) s[i] += x;
  const double p = s[1] * s[1] * s[2] * s[3] * s[4];
  auto backward = [&](double factor) {
    const autograd::Variable s1 = autograd::sum(params[1].second);
    autograd::Variable loss = autograd::mul(s1, s1);
    for (size_t i = 2; i < sizes.size(); ++i)
      loss = autograd::mul(autograd::sum(params[i].second), loss);
    autograd::scale(loss, factor).backward();
  };
  // The owners' gradients are `times` x P / s_i (w0's none: unused).
  auto expect_sums = [&](double times) {
    for (size_t i = 1; i < sizes.size(); ++i) {
      const autograd::Variable& v = params[i].second;
      if (owner[i] != rank % shard()) {
        EXPECT_FALSE(v.grad().defined()) << params[i].first;
        continue;
      }
      const std::vector<float> g = v.grad().to_vector<float>();
      const double want = times * p / s[i] * (i == 1 ? 2 : 1);
      for (size_t at : {size_t{0}, size_t{777}, g.size() - 1})
        EXPECT_NEAR(g[at], want, 1e-5 * std::fabs(want)) << params[i].first << "[" << at << "]";
    }
  };
  const double every = world * (world + 1) / 2.0;  // sum of (rank + 1) over the job
  double group_sum = 0;                              // ... over this rank's group
  for (int r = rank / shard() * shard(); r < (rank / shard() + 1) * shard(); ++r) group_sum += r + 1;
  red.prepare_backward(true);
  backward(rank + 1.0);
  red.finish();
  expect_sums(every);
  red.zero_grad();
  red.prepare_backward(false);
  backward(rank + 1.0);
  red.finish();
  expect_sums(group_sum);  // (not across the groups yet)
  red.prepare_backward(true);
  backward(rank + 1.0);
  red.finish();
  expect_sums(2 * every);
  red.zero_grad();
  red.prepare_backward(true);
  backward(rank == world - 1 ? INFINITY : rank + 1.0);
  red.finish();
  for (size_t i = 1; i < sizes.size(); ++i) {
    if (owner[i] != rank % shard()) continue;
    EXPECT_FALSE(std::isfinite(params[i].second.grad().to_vector<float>()[3]))
        << params[i].first << ": the last rank's inf did not reach this owner";
  }
}

// zero1, zero2 and zero3 over groups of world/2 ranks: DDP's run (float32 SGD, fp16 AdamW);
// each rank steps and keeps its group's share, the groups' shares alike.
TEST_F(Hybrid, ShardGroupsTrainAsDdp) {
  const int world = group().world(), rank = group().rank();
  for (const PrecisionCase k : {kPrecisionCases[0], kPrecisionCases[1]}) {
    SCOPED_TRACE(::testing::Message() << k.optimizer << " at precision " << k.precision);
    auto cfg = [&](const std::string& strategy) {
      nn::Config c = hybrid(config(16), strategy, "logs-" + strategy);
      c.experiment_name = k.optimizer;
      c.optimizer = k.optimizer;
      c.precision = k.precision;
      c.lr = k.lr;
      return c;
    };
    nn::Config ddp_cfg = cfg("ddp");
    ddp_cfg.shard_size = "auto";
    nn::Trainer ddp(ddp_cfg, "", group());
    const nn::FitResult rd = ddp.fit();
    const std::vector<double> wd = flat_weights(ddp);
    for (const char* strategy : {"zero1", "zero2", "zero3"}) {
      SCOPED_TRACE(strategy);
      nn::Trainer t(cfg(strategy), "", group());
      nn::ZeroRedundancy* zero = t.zero();
      ASSERT_NE(zero, nullptr);
      const auto& params = t.optimizer().parameters();
      // The partition is the group's: rank r owns what rank r % shard owns in a shard's world.
      std::vector<int64_t> sizes;
      for (const auto& [n, v] : params) sizes.push_back(v.numel());
      const std::vector<int> owners = nn::partition_parameters(sizes, shard());
      int owned = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_EQ(zero->owner(i), owners[i]) << params[i].first;
        const bool mine = owners[i] == rank % shard();
        owned += mine;
        EXPECT_EQ(t.optimizer().owns(i), mine) << params[i].first;
        if (std::string(strategy) == "zero3") {
          EXPECT_EQ(params[i].second.data().released(), !mine) << params[i].first;
        }
      }
      EXPECT_GT(owned, 0);
      // Every group holds the whole state between its ranks: world/shard copies of it.
      const auto state = static_cast<double>(t.optimizer().state_bytes());
      EXPECT_EQ(allreduce_host(group(), state),
                static_cast<double>(world / shard()) *
                    static_cast<double>(zero->total_state_bytes()));
      const nn::FitResult r = t.fit();
      EXPECT_EQ(r.global_step, rd.global_step);
      const std::vector<double> w = flat_weights(t);
      EXPECT_TRUE(same_on_every_rank(checksum(w)));
      if (tolerance() == 0) {
        EXPECT_EQ(w, wd) << "max relative difference " << max_rel_diff(w, wd);
        EXPECT_EQ(r.test.confusion.counts(), rd.test.confusion.counts());
      } else {  // (fp16 sums round in another order)
        EXPECT_LT(max_rel_diff(w, wd), std::string(k.precision) == "32" ? tolerance() : 2e-3);
      }
    }
  }
}

// Gradient accumulation: the backwards before a step's last keep their running sums within the
// group, and the last one's sums cross between the groups once (summed on every backward, the
// earlier batches would count twice). Plain SGD, where a doubled gradient doubles the update;
// and clipped by the norm of the whole gradient, which each group's ranks sum among themselves
// (over every rank, it would count each group's copy).
TEST_F(Hybrid, AccumulatesWithinTheGroupAndSumsAcrossOnce) {
  for (const double clip : {0.0, 0.05}) {
    SCOPED_TRACE(clip > 0 ? "clipped by the norm" : "unclipped");
    auto cfg = [&](const std::string& strategy) {
      nn::Config c = hybrid(config(16), strategy, "logs-accumulate-" + strategy);
      if (strategy == "ddp") c.shard_size = "auto";
      c.experiment_name = clip > 0 ? "clipped" : "unclipped";
      c.momentum = 0;
      c.accumulate_grad_batches = 3;
      c.limit_train_batches = "9";
      c.gradient_clip_val = clip;  // (0.05: below the gradients' norm, so every step clips)
      return c;
    };
    nn::Trainer ddp(cfg("ddp"), "", group());
    const int64_t steps = ddp.fit().global_step;
    EXPECT_EQ(steps, 6);  // (two epochs of three steps)
    const std::vector<double> wd = flat_weights(ddp);
    for (const char* strategy : {"zero2", "zero3"}) {
      SCOPED_TRACE(strategy);
      nn::Trainer t(cfg(strategy), "", group());
      EXPECT_EQ(t.fit().global_step, steps);
      const std::vector<double> w = flat_weights(t);
      // (The clipped runs sum the norm in another order than DDP's.)
      EXPECT_LE(max_rel_diff(w, wd), clip > 0 ? 1e-5 : tolerance())
          << "max relative difference " << max_rel_diff(w, wd);
    }
  }
}

// A hybrid zero3 run with an EMA stopped at step 4: its last.h5 holds DDP's tensors (the
// group of rank 0 gathers them; the other group's ranks send nothing), and it resumes under
// hybrid sharding, plain zero3 and DDP to the uninterrupted run's weights.
TEST_F(Hybrid, CheckpointsHoldTheWholeStateAndResumeUnderOtherStrategies) {
  auto cfg = [&](const std::string& strategy, const std::string& logs) {
    nn::Config c = hybrid(config(16), strategy, logs);
    if (strategy == "ddp") c.shard_size = "auto";
    c.optimizer = "adam";
    c.lr = 0.003;
    c.precision = "bf16";
    c.ema_decay = 0.9;
    return c;
  };
  nn::Trainer full(cfg("ddp", "logs-full"), "", group());
  const int64_t steps = full.fit().global_step;
  const std::vector<double> want = flat_weights(full);

  auto stopped = [&](const std::string& strategy) {
    nn::Config c = cfg(strategy, "logs-stopped-" + strategy);
    c.max_steps = 4;
    return nn::Trainer(c, "", group()).fit().version_dir + "/checkpoints/last.h5";
  };
  const std::string from_hybrid = stopped("zero3"), from_ddp = stopped("ddp");
  const std::string shared =
      under_rank0_root("logs-stopped-zero3/default/version_0/checkpoints/last.h5");
  if (group().rank() == 0) {
    EXPECT_EQ(from_hybrid, shared);
    io::H5Reader h(from_hybrid), d(from_ddp);
    int compared = 0;
    for (const char* part : {"model", "optimizer", "current_model"}) {
      const std::vector<std::string> names = d.list_datasets(part);
      EXPECT_EQ(h.list_datasets(part), names) << part;
      for (const std::string& path : names) {
        if (d.info(path).dtype != io::H5Type::kFloat32) continue;  // (batch norm's counts)
        std::vector<float> a(static_cast<size_t>(d.info(path).numel())), b(a.size());
        h.read(path, io::H5Type::kFloat32, a.data(), static_cast<int64_t>(a.size()));
        d.read(path, io::H5Type::kFloat32, b.data(), static_cast<int64_t>(b.size()));
        const std::vector<double> x(a.begin(), a.end()), y(b.begin(), b.end());
        EXPECT_LE(max_rel_diff(x, y), tolerance() == 0 ? 0.0 : 1e-3) << path;
        ++compared;
      }
    }
    EXPECT_GE(compared, 6 + 12 + 6);  // six parameters: weights, two moments, training weights
  }
  for (const char* strategy : {"zero3", "hybrid_shard", "ddp"}) {
    SCOPED_TRACE(strategy);
    nn::Config c = cfg(strategy, std::string("logs-resumed-") + strategy);
    if (std::string(strategy) == "hybrid_shard") c.shard_size = "auto";  // (a node's: the world)
    c.resume = shared;
    nn::Trainer t(c, "", group());
    EXPECT_EQ(t.fit().global_step, steps);
    const std::vector<double> w = flat_weights(t);
    EXPECT_LE(max_rel_diff(w, want), tolerance() == 0 ? 0.0 : 1e-3)
        << "max relative difference " << max_rel_diff(w, want);
  }
}

// --shard-size that does not divide the world, or without a ZeRO strategy: one clear error on
// every rank. hybrid_shard on one node shards over the node, which is the whole world here.
TEST_F(Hybrid, ShardSizesThatDoNotFitAreRefused) {
  nn::Config c = hybrid(config(16), "zero2", "logs-errors");
  c.shard_size = "3";
  try {
    nn::Trainer t(c, "", group());
    ADD_FAILURE() << "--shard-size 3 accepted at world " << group().world();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--shard-size 3: 3 ranks do not divide the world size"),
              std::string::npos)
        << e.what();
  }
  c.shard_size = "2";
  c.strategy = "ddp";
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.shard_size = "two";
  c.strategy = "zero1";
  EXPECT_THROW(c.validate(), std::invalid_argument);

  nn::Config node = hybrid(config(16), "hybrid_shard", "logs-node");
  node.shard_size = "auto";
  nn::Trainer t(node, "", group());
  ASSERT_NE(t.zero(), nullptr);
  EXPECT_TRUE(t.zero()->parameters_sharded());
  std::vector<int64_t> sizes;
  for (const auto& [n, v] : t.optimizer().parameters()) sizes.push_back(v.numel());
  const std::vector<int> owners = nn::partition_parameters(sizes, group().world());
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(t.zero()->owner(i), owners[i]);
}

}  // namespace
}  // namespace mlai::dist
