// Mixed precision on the CPU backend (fp16/bf16 storage, fp32 arithmetic): --precision parsing,
// working copies, the loss scaler's skip/backoff/growth (GradScaler semantics), Adam's step
// count across skipped steps, checkpointed scaler state, and training end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/h5file.h"
#include "nn/amp.h"
#include "nn/checkpoint.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/trainer.h"
#include "synthetic_data.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// conv (fp16 working weights) -> batch norm (fp32 parameters) -> relu -> pool -> linear.
std::shared_ptr<Sequential> small_net(uint64_t seed) {
  Generator gen(seed);
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(1, 4, 3, 1, 1, gen));
  net->add(std::make_shared<BatchNorm2d>(4));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<GlobalAvgPool>());
  net->add(std::make_shared<Linear>(4, 3, gen));
  return net;
}

Tensor images(DType dt, uint64_t seed) {
  Generator gen(seed);
  return Tensor::normal({6, 5, 5, 1}, 0.0, 1.0, gen).to(dt);
}
const Tensor kLabels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 0, 1, 2}, {6});

std::vector<float> f32(const Tensor& t) { return t.to(DType::kFloat32).to_vector<float>(); }

std::vector<std::vector<float>> masters(const Module& m) {
  std::vector<std::vector<float>> out;
  for (auto& [n, v] : m.named_parameters()) out.push_back(v.data().to_vector<float>());
  return out;
}

// One training step as Trainer::fit runs it.
void train_step(Module& net, Optimizer& opt, GradScaler& scaler, int64_t global_step) {
  Variable x(images(net.compute_dtype(), 7 + static_cast<uint64_t>(global_step)));
  Variable loss = autograd::cross_entropy(net(x), kLabels, 0.0);
  opt.zero_grad();
  if (scaler.enabled()) {
    loss.backward(scaler.seed());
  } else {
    loss.backward();
  }
  scaled_step(opt, scaler, 1.0f, global_step);
}

TEST(Amp, ParsesPrecisionFlags) {
  EXPECT_EQ(parse_precision("32"), Precision::kFloat32);
  EXPECT_EQ(parse_precision("16"), Precision::kFloat16);
  EXPECT_EQ(parse_precision("16-mixed"), Precision::kFloat16);
  EXPECT_EQ(parse_precision("bf16"), Precision::kBFloat16);
  EXPECT_EQ(parse_precision("bf16-mixed"), Precision::kBFloat16);
  try {
    parse_precision("8");
    FAIL() << "accepted --precision 8";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--precision 8"), std::string::npos) << e.what();
  }
  Config c;
  c.precision = "64";
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.precision = "bf16";
  EXPECT_NO_THROW(c.validate());
}

TEST(Amp, WorkingCopiesCarryForwardAndGradients) {
  auto net = small_net(1);
  net->set_compute_dtype(DType::kFloat16);
  const auto names = net->named_parameters();
  const auto work = net->working_parameters();
  ASSERT_EQ(work.size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    const bool bn = names[i].first.rfind("1.", 0) == 0;  // the BatchNorm2d child
    EXPECT_EQ(work[i].defined(), !bn) << names[i].first;
    EXPECT_EQ(names[i].second.dtype(), DType::kFloat32) << names[i].first;
    if (work[i].defined()) {
      EXPECT_EQ(work[i].dtype(), DType::kFloat16);
      EXPECT_EQ(f32(work[i].data()),
                f32(tensor::cast(names[i].second.data(), DType::kFloat16)));
    }
  }
  Variable y = (*net)(Variable(images(DType::kFloat16, 3)));
  EXPECT_EQ(y.dtype(), DType::kFloat16);
  autograd::cross_entropy(y, kLabels, 0.0).backward();
  for (size_t i = 0; i < names.size(); ++i) {
    // Gradients land on the working copies (fp16), batch norm's on its fp32 parameters.
    if (work[i].defined()) {
      EXPECT_TRUE(work[i].grad().defined()) << names[i].first;
      EXPECT_EQ(work[i].grad().dtype(), DType::kFloat16);
      EXPECT_FALSE(names[i].second.grad().defined()) << names[i].first;
    } else {
      EXPECT_EQ(names[i].second.grad().dtype(), DType::kFloat32) << names[i].first;
    }
  }
  // The step updates the fp32 masters and refreshes every working copy from them.
  OptimizerConfig oc;
  oc.name = "sgd";
  oc.lr = 0.5;
  oc.momentum = 0.9;
  auto opt = make_optimizer(net->named_parameters(), oc);
  opt->set_working(net->working_parameters());
  const auto before = masters(*net);
  opt->step();
  const auto after = masters(*net);
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_NE(before[i], after[i]) << names[i].first << " did not move";
    if (work[i].defined()) {
      EXPECT_EQ(f32(work[i].data()),
                f32(tensor::cast(names[i].second.data(), DType::kFloat16)))
          << names[i].first;
    }
  }
}

// The test: force an overflow; the step is skipped, the scale halves, nothing changes.
TEST(Amp, OverflowSkipsTheStepAndHalvesTheScale) {
  for (const char* optimizer : {"sgd", "adam"}) {
    SCOPED_TRACE(optimizer);
    auto net = small_net(2);
    net->set_compute_dtype(DType::kFloat16);
    OptimizerConfig oc;
    oc.name = optimizer;
    oc.lr = 0.01;
    oc.momentum = std::string(optimizer) == "sgd" ? 0.9 : 0.0;
    auto opt = make_optimizer(net->named_parameters(), oc);
    opt->set_working(net->working_parameters());
    ScalerOptions so;
    so.init_scale = std::ldexp(1.0, 100);  // fp16 gradients x 2^100: certain overflow
    GradScaler scaler(tensor::Device::cpu(), true, so);
    const auto w0 = masters(*net);
    std::vector<std::vector<float>> work0, state0;
    for (auto& v : net->working_parameters())
      if (v.defined()) work0.push_back(f32(v.data()));
    for (auto& [n, t] : opt->state()) state0.push_back(t->to_vector<float>());

    train_step(*net, *opt, scaler, 0);
    EXPECT_EQ(scaler.skipped_steps(), 1);
    EXPECT_EQ(scaler.scale(), std::ldexp(1.0, 99));
    EXPECT_EQ(masters(*net), w0) << "a skipped step changed the master weights";
    std::vector<std::vector<float>> work1, state1;
    for (auto& v : net->working_parameters())
      if (v.defined()) work1.push_back(f32(v.data()));
    for (auto& [n, t] : opt->state()) state1.push_back(t->to_vector<float>());
    EXPECT_EQ(work1, work0) << "a skipped step changed the working copies";
    EXPECT_EQ(state1, state0) << "a skipped step changed the optimizer state";
    // The flag was reset by the update: a later finite step is taken.
    EXPECT_EQ(scaler.found_inf().item(), 0.0);
  }
}

TEST(Amp, ScaleGrowsAfterTheIntervalAndBacksOff) {
  ScalerOptions so;
  so.init_scale = 1024;
  so.growth_interval = 3;
  GradScaler scaler(tensor::Device::cpu(), true, so);
  std::vector<Tensor> finite{Tensor::full({4}, 1.0, DType::kFloat16), Tensor::full({2}, 2.0)};
  std::vector<Tensor> bad{Tensor::from_vector(std::vector<float>{1.0f, INFINITY}, {2}).to(DType::kFloat16)};
  auto clean_step = [&] {
    scaler.check(finite);
    scaler.update();
  };
  clean_step();
  clean_step();
  EXPECT_EQ(scaler.scale(), 1024.0);  // 2 of 3 clean steps
  clean_step();
  EXPECT_EQ(scaler.scale(), 2048.0);  // grown after the third
  EXPECT_EQ(scaler.inv_scale().item(), 1.0 / 2048.0);
  clean_step();
  clean_step();
  scaler.check(bad);  // an overflow resets the run of clean steps
  scaler.update();
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  clean_step();
  clean_step();
  EXPECT_EQ(scaler.scale(), 1024.0);
  clean_step();
  EXPECT_EQ(scaler.scale(), 2048.0);
  // A nan counts like an inf.
  std::vector<Tensor> nan{Tensor::from_vector(std::vector<float>{NAN}, {1})};
  scaler.check(nan);
  scaler.update();
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_EQ(scaler.skipped_steps(), 2);
}

// Skipped steps never reach the optimizer (as in PyTorch): after overflows, Adam's first real
// step is a first step (bias correction with t = 1), and so is SGD's (the momentum buffer
// starts as the gradient: with dampening, unlike a later step), equal to that of a run that
// never overflowed. The host never learns of the skips during the steps: the kernels subtract
// the device's count; step_count() reads it.
TEST(Amp, SkippedStepsDoNotAdvanceTheOptimizersStepCount) {
  for (const char* name : {"adam", "sgd"}) {
    SCOPED_TRACE(name);
    OptimizerConfig oc;
    oc.name = name;
    oc.lr = 0.01;
    if (oc.name == "sgd") {
      oc.momentum = 0.9;
      oc.dampening = 0.5;
    }
    // Steps on the same batch until the masters first move; returns them, the steps skipped
    // before, the scale that step ran at and the optimizer's step count after it.
    struct Run {
      std::vector<std::vector<float>> w;
      int64_t skipped = 0, count = 0;
      double scale = 0;
    };
    auto run = [&](double init_scale) {
      auto net = small_net(3);
      net->set_compute_dtype(DType::kFloat16);
      auto opt = make_optimizer(net->named_parameters(), oc);
      opt->set_working(net->working_parameters());
      ScalerOptions so;
      so.init_scale = init_scale;
      GradScaler scaler(tensor::Device::cpu(), true, so);
      const auto w0 = masters(*net);
      Run r;
      for (int64_t s = 0; s < 200 && masters(*net) == w0; ++s) {
        r.scale = scaler.scale();
        Variable loss =
            autograd::cross_entropy((*net)(Variable(images(DType::kFloat16, 7))), kLabels, 0.0);
        opt->zero_grad();
        loss.backward(scaler.seed());
        scaled_step(*opt, scaler, 1.0f, s);
      }
      r.w = masters(*net);
      r.skipped = scaler.skipped_steps();
      r.count = opt->step_count();
      return r;
    };
    const Run overflowed = run(std::ldexp(1.0, 100));
    EXPECT_GT(overflowed.skipped, 50);  // 2^100 halves until fp16 gradients fit
    EXPECT_NE(overflowed.w, masters(*small_net(3))) << "no step was ever taken";
    EXPECT_EQ(overflowed.count, 1);
    const Run clean = run(overflowed.scale);
    EXPECT_EQ(clean.skipped, 0);
    EXPECT_EQ(clean.count, 1);
    ASSERT_EQ(overflowed.w.size(), clean.w.size());
    for (size_t i = 0; i < clean.w.size(); ++i)
      for (size_t j = 0; j < clean.w[i].size(); ++j)
        ASSERT_EQ(overflowed.w[i][j], clean.w[i][j]) << "parameter " << i << "[" << j << "]";
  }
}

// Gradient-norm clipping in scaled_step: fp32 without a scaler and fp16 with one (whose
// stored gradients are x 1024) clip the same true gradients to the same update.
TEST(Amp, ClipNormActsOnTheUnscaledGradients) {
  auto run = [](DType dt, bool scaled, double clip) {
    auto net = small_net(6);
    net->set_compute_dtype(dt);
    OptimizerConfig oc;
    oc.name = "sgd";
    oc.lr = 1.0;
    auto opt = make_optimizer(net->named_parameters(), oc);
    opt->set_working(net->working_parameters());
    ScalerOptions so;
    so.init_scale = 1024;
    GradScaler scaler(tensor::Device::cpu(), scaled, so);
    const auto w0 = masters(*net);
    Variable loss = autograd::cross_entropy((*net)(Variable(images(dt, 7))), kLabels, 0.0);
    loss.backward(scaled ? scaler.seed() : Tensor::full({}, 1.0));
    // The true gradient norm, from the gradients as stored.
    const double norm = std::sqrt(tensor::squared_norm(opt->gradients()).item()) / (scaled ? 1024 : 1);
    scaled_step(*opt, scaler, 1.0f, 0, clip);
    const auto w1 = masters(*net);
    double moved = 0;  // the update's norm (lr 1: the clipped gradient's norm)
    for (size_t i = 0; i < w0.size(); ++i)
      for (size_t j = 0; j < w0[i].size(); ++j) moved += std::pow(w1[i][j] - w0[i][j], 2);
    return std::make_pair(norm, std::sqrt(moved));
  };
  const auto [norm32, free32] = run(DType::kFloat32, false, 0.0);
  ASSERT_GT(norm32, 0.05);
  EXPECT_NEAR(free32, norm32, 1e-4 * norm32);  // no clipping: the whole gradient
  const auto [n32, clipped32] = run(DType::kFloat32, false, 0.02);
  EXPECT_NEAR(clipped32, 0.02, 1e-6);
  const auto [n16, clipped16] = run(DType::kFloat16, true, 0.02);
  EXPECT_NEAR(n16, norm32, 2e-2 * norm32);  // fp16 forward/backward: close, not equal
  EXPECT_NEAR(clipped16, 0.02, 2e-5);
  const auto [n_big, unclipped16] = run(DType::kFloat16, true, 1e6);
  EXPECT_NEAR(unclipped16, n_big, 1e-3 * n_big);  // a bound it never reaches changes nothing
}

TEST(Amp, CheckpointKeepsTheScalerState) {
  const std::string path =
      (fs::temp_directory_path() / ("mlai_amp_ckpt_" + std::to_string(::getpid()) + ".h5")).string();
  auto net = small_net(4);
  auto opt = make_optimizer(net->named_parameters(), OptimizerConfig{});
  ScalerOptions so;
  so.init_scale = 4096;
  so.growth_interval = 1;
  GradScaler a(tensor::Device::cpu(), true, so);
  std::vector<Tensor> bad{Tensor::full({1}, INFINITY)}, ok{Tensor::full({1}, 1.0)};
  a.check(bad);
  a.update();  // 2048, one skipped
  a.check(ok);
  a.update();  // 4096
  a.check(bad);
  a.update();  // 2048, two skipped
  save_checkpoint(path, *net, opt.get(), TrainState{}, Config{}, a.state());
  GradScaler b(tensor::Device::cpu(), true);
  load_checkpoint(path, *net, opt.get(), b.state());
  EXPECT_EQ(b.scale(), 2048.0);
  EXPECT_EQ(b.inv_scale().item(), 1.0 / 2048.0);
  EXPECT_EQ(b.skipped_steps(), 2);
  fs::remove(path);
}

class AmpTrainerTest : public testing::SyntheticDataTest {
 protected:
  Config base(const std::string& precision) const {
    Config c = synthetic_config();
    c.epochs = 3;
    c.precision = precision;
    c.lr_schedule = "constant";
    return c;
  }
};

// fp16 and bf16 learn like fp32 on the same data, and fp16's scaler state is in the
// checkpoint; a resumed fp16 run picks it up.
TEST_F(AmpTrainerTest, MixedPrecisionTrainsLikeFloat32) {
  Config c32 = base("32");
  const FitResult r32 = Trainer(c32).fit();
  for (const char* p : {"16", "bf16"}) {
    SCOPED_TRACE(p);
    Config c = base(p);
    c.experiment_name = std::string("amp") + p;
    Trainer t(c);
    const FitResult r = t.fit();
    EXPECT_GT(r.test.confusion.accuracy(), 0.9);
    EXPECT_NEAR(r.test.confusion.accuracy(), r32.test.confusion.accuracy(), 0.03);
    EXPECT_NEAR(r.last_train_loss, r32.last_train_loss, 0.1);
    EXPECT_EQ(r.global_step, r32.global_step);
    for (auto& [n, v] : t.model().named_parameters())
      EXPECT_EQ(v.dtype(), DType::kFloat32) << n << ": masters stay float32";
    if (std::string(p) == "16") {
      EXPECT_EQ(r.loss_scale, 65536.0);  // no overflow in 54 steps, no growth before 2000
      EXPECT_EQ(r.skipped_steps, 0);
      io::H5Reader ck(r.version_dir + "/checkpoints/last.h5");
      EXPECT_TRUE(ck.has("amp/scale"));
      EXPECT_TRUE(ck.has("amp/skipped_steps"));
      // Resuming for a 4th epoch ends bit-identical to 4 epochs in one go (constant schedule:
      // the horizon does not move): masters, working copies and scaler all come back.
      Config more = c;
      more.epochs = 4;
      more.resume = r.version_dir + "/checkpoints/last.h5";
      Trainer resumed(more);
      const FitResult r2 = resumed.fit();
      EXPECT_EQ(r2.global_step, r.global_step + 18);
      EXPECT_EQ(r2.loss_scale, 65536.0);
      Config straight = c;
      straight.epochs = 4;
      straight.experiment_name = "amp16-straight";
      Trainer whole(straight);
      whole.fit();
      const auto a = resumed.model().named_parameters(), b = whole.model().named_parameters();
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_EQ(a[i].second.data().to_vector<float>(), b[i].second.data().to_vector<float>())
            << a[i].first;
    } else {
      EXPECT_EQ(r.loss_scale, 1.0);  // bf16 needs no scaling
    }
  }
}

}  // namespace
}  // namespace mlai::nn
