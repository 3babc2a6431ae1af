// --strategy zero2's pieces (ZeRO stage 2) under mpirun -np 2 on the CPU: the reduce-scatter,
// the reducer that sums each gradient only on the rank that owns it and keeps buffers for
// those alone, and the loss scaler's overflow check summed over the ranks' shares. Training
// under zero2 against DDP is in zero_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "ddp_fixture.h"
#include "dist/reducer.h"
#include "nn/amp.h"
#include "nn/optim.h"
#include "nn/trainer.h"

namespace mlai::dist {
namespace {

// Uneven segments (one of them empty), in float32 and float16: each rank gets the sum of its own.
TEST_F(Ddp, ReduceScatterSumsEachRanksSegment) {
  auto comm = make_communicator("mpi", tensor::Device::cpu(), group());
  const int me = group().rank();
  for (const auto dt : {tensor::DType::kFloat32, tensor::DType::kFloat16}) {
    for (const std::vector<int64_t>& counts :
         {std::vector<int64_t>{5, 9}, std::vector<int64_t>{0, 7}, std::vector<int64_t>{6, 0}}) {
      tensor::Generator gen(static_cast<uint64_t>(10 + me));  // different values on each rank
      const Tensor send = Tensor::uniform({counts[0] + counts[1]}, -2, 2, gen).to(dt);
      Tensor recv = Tensor::zeros({counts[static_cast<size_t>(me)]}, dt);
      comm->reduce_scatter_async(send, recv, counts)->wait();
      const std::vector<double> mine = send.to_double_vector();
      const Tensor others = comm->allgather(send);  // [2, n]: both ranks' values
      const std::vector<double> both = others.to_double_vector();
      const int64_t at = me == 0 ? 0 : counts[0], n = static_cast<int64_t>(mine.size());
      const std::vector<double> got = recv.to_double_vector();
      ASSERT_EQ(static_cast<int64_t>(got.size()), counts[static_cast<size_t>(me)]);
      for (int64_t i = 0; i < counts[static_cast<size_t>(me)]; ++i) {
        const double want =
            both[static_cast<size_t>(at + i)] + both[static_cast<size_t>(n + at + i)];
        const double tol = dt == tensor::DType::kFloat16 ? 4e-3 * (1 + std::fabs(want)) : 1e-6;
        EXPECT_NEAR(got[static_cast<size_t>(i)], want, tol) << i;
      }
    }
  }
  Tensor small = Tensor::zeros({3});
  EXPECT_THROW(comm->reduce_scatter_async(Tensor::zeros({5}), small, {2, 2}),
               std::invalid_argument);
}

// Five parameters in buckets that mix owners; w0 takes no part in the loss (its bucket, the
// last, is reduced by finish()).
TEST_F(Ddp, ReducerSumsEachGradientOnlyOnItsOwner) {
  tensor::Generator gen(3);
  const std::vector<int64_t> sizes = {30000, 50000, 20000, 40000, 10000};
  const std::vector<int> owner = {1, 0, 0, 1, 0};
  std::vector<std::pair<std::string, autograd::Variable>> params;
  for (size_t i = 0; i < sizes.size(); ++i)
    params.emplace_back(std::string(1, 'w').append(std::to_string(i)),
                        autograd::Variable(Tensor::uniform({sizes[i]}, -1, 1, gen), true));
  auto comm = make_communicator("mpi", tensor::Device::cpu(), group());
  ReducerOptions ro;
  ro.bucket_cap_mb = 0.3;     // w3+w2 (0.24 MB), then w1 and w0 alone (0.32 MB together)
  ro.first_bucket_mb = 0.05;  // w4 alone
  ro.owner = owner;
  ro.packs_in_flight = 1;
  Reducer red(params, *comm, ro);
  ASSERT_TRUE(red.shards_gradients());
  ASSERT_EQ(red.bucket_count(), 4u);
  const int me = group().rank();
  size_t mine = 0, biggest = 0;
  for (size_t i = 0; i < sizes.size(); ++i)
    if (owner[i] == me) mine += static_cast<size_t>(sizes[i]) * sizeof(float);
  EXPECT_EQ(red.kept_grad_bytes(), mine);
  for (const auto& bucket : red.bucket_names()) {
    size_t bytes = 0;
    for (const std::string& n : bucket)
      bytes += static_cast<size_t>(sizes[static_cast<size_t>(n[1] - '0')]) * sizeof(float);
    biggest = std::max(biggest, bytes);
  }
  // loss = (rank + 1) P, P = s4 (s3 (s2 (s1 s1))) with s_i = sum(w_i): backward reaches w4
  // first and w1 last, one at a time. w_i's gradient is (rank + 1) P / s_i (w1's twice that),
  // summed over the ranks 3 times that.
  std::vector<double> s(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i)
    for (double x : params[i].second.data().to_double_vector()) s[i] += x;
  const double p = s[1] * s[1] * s[2] * s[3] * s[4];
  auto backward = [&] {
    const autograd::Variable s1 = autograd::sum(params[1].second);
    autograd::Variable loss = autograd::mul(s1, s1);
    for (size_t i = 2; i < sizes.size(); ++i)
      loss = autograd::mul(autograd::sum(params[i].second), loss);
    autograd::scale(loss, me + 1.0).backward();
  };
  auto expect_sums = [&](double times) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const autograd::Variable& v = params[i].second;
      if (owner[i] != me) {
        EXPECT_FALSE(v.grad().defined()) << params[i].first << ": another rank's gradient was kept";
        continue;
      }
      ASSERT_TRUE(v.grad().defined()) << params[i].first;
      const std::vector<float> g = v.grad().to_vector<float>();
      const double want = i == 0 ? 0 : 3.0 * times * p / s[i] * (i == 1 ? 2 : 1);
      for (size_t at : {size_t{0}, size_t{777}, g.size() - 1})
        EXPECT_NEAR(g[at], want, 1e-5 * std::fabs(want)) << params[i].first << "[" << at << "]";
    }
  };
  red.prepare_backward(true);
  backward();
  EXPECT_EQ(red.started_during_backward(), 3) << "reduce-scatters should start inside backward";
  red.finish();
  expect_sums(1);
  // One pack at a time (each made at its bucket's first gradient, the older one's
  // reduce-scatter waited for first): never more than the largest bucket.
  EXPECT_EQ(red.peak_pack_bytes(), biggest);
  // Accumulation: a backward that does not step is reduced too, into the owners' sums.
  red.zero_grad();
  red.prepare_backward(false);
  backward();
  red.finish();
  red.prepare_backward(true);
  backward();
  red.finish();
  expect_sums(2);
  red.zero_grad();
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (owner[i] != me) continue;
    EXPECT_EQ(params[i].second.grad().to_vector<float>()[5], 0.0f) << params[i].first;
  }
}

// The loss scaler under zero2: an overflow in one rank's share skips the step on every rank
// and halves the scale everywhere; a clean step goes on.
TEST_F(Ddp, ZeroStage2OverflowOnOneRankSkipsEverywhere) {
  tensor::Generator gen(4);
  std::vector<std::pair<std::string, autograd::Variable>> params;
  for (int i = 0; i < 2; ++i)
    params.emplace_back(std::string(1, 'p').append(std::to_string(i)),
                        autograd::Variable(Tensor::uniform({64}, -1, 1, gen), true));
  nn::OptimizerConfig oc;
  oc.lr = 0.1;
  oc.owned = {group().rank() == 0, group().rank() == 1};
  oc.sharded_gradients = true;
  auto opt = nn::make_optimizer(params, oc);
  auto comm = make_communicator("mpi", tensor::Device::cpu(), group());
  const std::function<void(Tensor&)> sum = [&](Tensor& t) { comm->allreduce_sum(t); };
  nn::GradScaler scaler(tensor::Device::cpu(), true);
  const size_t mine = static_cast<size_t>(group().rank());
  const std::vector<float> before = params[mine].second.data().to_vector<float>();
  for (const bool overflow : {true, false}) {
    SCOPED_TRACE(overflow ? "overflow on rank 1" : "clean step");
    Tensor g = Tensor::full({64}, 65536.0, tensor::DType::kFloat32, tensor::Device::cpu());
    if (overflow && group().rank() == 1) {
      std::vector<float> v = g.to_vector<float>();
      v[9] = INFINITY;
      g = Tensor::from_vector(v, {64});
    }
    params[mine].second.set_grad(g);  // (the other rank's parameter has none here)
    nn::scaled_step(*opt, scaler, 1.0f, overflow ? 0 : 1, 0.0, nullptr, sum);
    const std::vector<float> after = params[mine].second.data().to_vector<float>();
    if (overflow) {
      EXPECT_EQ(after, before) << "a step skipped on one rank must be skipped on all";
      EXPECT_EQ(scaler.scale(), 32768.0);
      EXPECT_EQ(scaler.skipped_steps(), 1);
    } else {
      EXPECT_NE(after, before);
      EXPECT_EQ(scaler.skipped_steps(), 1);
    }
  }
}

}  // namespace
}  // namespace mlai::dist
