// Optimizers against steps computed by hand (PyTorch's update rules), and the LR schedules.
#include "nn/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "nn/lr_schedule.h"

namespace mlai::nn {
namespace {

// One scalar parameter p = 1 with gradient 0.5 at every step.
struct Scalar {
  Variable p{Tensor::full({1}, 1.0), true};
  std::vector<std::pair<std::string, Variable>> named() { return {{"p", p}}; }
  double run(Optimizer& opt, int steps) {
    for (int i = 0; i < steps; ++i) {
      p.set_grad(Tensor::full({1}, 0.5));
      opt.step();
    }
    return p.data().item();
  }
};

TEST(Optim, SgdMomentumWeightDecay) {
  Scalar s;
  OptimizerConfig c;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.weight_decay = 0.01;
  auto opt = make_optimizer(s.named(), c);
  EXPECT_NEAR(s.run(*opt, 1), 0.949, 1e-6);     // d = 0.51, buf = d
  EXPECT_NEAR(s.run(*opt, 1), 0.852151, 1e-6);  // buf = 0.9*0.51 + 0.50949
  EXPECT_EQ(opt->step_count(), 2);
  auto st = opt->state();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].first, "p.momentum_buffer");
  EXPECT_NEAR(st[0].second->item(), 0.96849, 1e-6);
}

// --no-bias-decay: a matrix is decayed, a vector (a bias, batch-norm's weight) is not, with SGD
// (L2 in the gradient), Adam (the same), AdamW (decoupled), LARS and LAMB (neither decayed nor
// adapted: the step of weight decay 0); the decayed step equals the one without the flag.
TEST(Optim, NoBiasDecaySparesParametersOfOneDimension) {
  for (const char* name : {"sgd", "adam", "adamw", "lars", "lamb"}) {
    SCOPED_TRACE(name);
    auto run = [&](bool no_bias_decay) {
      Variable w{Tensor::full({2, 2}, 1.0), true}, b{Tensor::full({2}, 1.0), true};
      OptimizerConfig c;
      c.name = name;
      c.lr = 0.1;
      c.momentum = 0.9;
      c.weight_decay = 0.5;
      c.no_bias_decay = no_bias_decay;
      auto opt = make_optimizer({{"fc.weight", w}, {"fc.bias", b}}, c);
      for (int i = 0; i < 2; ++i) {
        w.set_grad(Tensor::full({2, 2}, 0.25));
        b.set_grad(Tensor::full({2}, 0.25));
        opt->step();
      }
      return std::make_pair(w.data().to_double_vector()[0], b.data().to_double_vector()[0]);
    };
    const auto [w_all, b_all] = run(false);
    const auto [w_no, b_no] = run(true);
    EXPECT_EQ(w_no, w_all);  // the matrix: decayed either way, the same bits
    // The bias without decay: what a run with weight_decay 0 gives.
    Variable b0{Tensor::full({2}, 1.0), true};
    OptimizerConfig c0;
    c0.name = name;
    c0.lr = 0.1;
    c0.momentum = 0.9;
    auto opt0 = make_optimizer({{"fc.bias", b0}}, c0);
    for (int i = 0; i < 2; ++i) {
      b0.set_grad(Tensor::full({2}, 0.25));
      opt0->step();
    }
    EXPECT_EQ(b_no, b0.data().to_double_vector()[0]);
    EXPECT_NE(b_no, b_all);  // decay did change the bias without the flag
  }
}

TEST(Optim, SgdNesterovAndPlain) {
  Scalar s;
  OptimizerConfig c;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.weight_decay = 0.01;
  c.nesterov = true;
  auto opt = make_optimizer(s.named(), c);
  EXPECT_NEAR(s.run(*opt, 1), 0.9031, 1e-6);  // d + 0.9 * buf = 0.969
  Scalar plain;
  OptimizerConfig pc;
  pc.lr = 0.2;
  auto sgd = make_optimizer(plain.named(), pc);
  EXPECT_NEAR(plain.run(*sgd, 3), 0.7, 1e-6);
  EXPECT_TRUE(sgd->state().empty());
  pc.nesterov = true;
  EXPECT_THROW(make_optimizer(plain.named(), pc), std::invalid_argument);
}

TEST(Optim, AdamAndAdamW) {
  Scalar a;
  OptimizerConfig c;
  c.name = "adam";
  c.lr = 0.1;
  auto adam = make_optimizer(a.named(), c);
  EXPECT_NEAR(a.run(*adam, 1), 0.9, 1e-6);  // the first Adam step moves by lr
  // v = (1 - beta2) g^2 with 1 - beta2 from double, as PyTorch (1 - float(0.999) is 1.3e-5 off).
  EXPECT_NEAR(adam->state()[1].second->item(), 0.001 * 0.25, 1e-10);
  EXPECT_NEAR(a.run(*adam, 1), 0.8, 1e-5);  // 0.1/0.19 * 0.095 / 0.5 (float arithmetic)
  Scalar w;
  c.name = "adamw";
  c.weight_decay = 0.1;
  auto adamw = make_optimizer(w.named(), c);
  EXPECT_NEAR(w.run(*adamw, 1), 0.89, 1e-6);  // decay 1 -> 0.99, then -0.1
  Scalar l2;
  c.name = "adam";
  auto adam_l2 = make_optimizer(l2.named(), c);
  EXPECT_NEAR(l2.run(*adam_l2, 1), 0.9, 1e-6);  // L2 folds into g; the first step is still lr
  c.name = "rmsprop";
  EXPECT_THROW(make_optimizer(l2.named(), c), std::invalid_argument);
}

TEST(Optim, GradScaleAndSkipFlag) {
  Scalar s;
  OptimizerConfig c;
  c.lr = 1.0;
  auto opt = make_optimizer(s.named(), c);
  s.p.set_grad(Tensor::full({1}, 0.5));
  opt->step(0.5f);  // grad * 0.5
  EXPECT_NEAR(s.p.data().item(), 0.75, 1e-7);
  opt->step(1.0f, Tensor::full({}, 1.0));  // flagged: no change
  EXPECT_NEAR(s.p.data().item(), 0.75, 1e-7);
  opt->step(1.0f, Tensor::full({}, 0.0));
  EXPECT_NEAR(s.p.data().item(), 0.25, 1e-7);
}

TEST(Optim, ParametersWithoutGradientsAreLeftAlone) {
  Variable a(Tensor::full({2}, 1.0), true), b(Tensor::full({2}, 1.0), true);
  OptimizerConfig c;
  c.lr = 1.0;
  c.momentum = 0.5;
  auto opt = make_optimizer({{"a", a}, {"b", b}}, c);
  a.set_grad(Tensor::full({2}, 1.0));
  opt->step();
  EXPECT_EQ(a.data().to_vector<float>(), (std::vector<float>{0, 0}));
  EXPECT_EQ(b.data().to_vector<float>(), (std::vector<float>{1, 1}));
}

// Capturable steps (rates and step numbers read from the device buffer stage() fills) equal
// ordinary ones bit for bit: SGD with dampening (whose first step differs from later ones),
// Adam and AdamW, two parameter groups (the second added after two steps, with its own rate
// and step count), and a rate that changes every step. With more groups than the buffer
// holds, the step is refused.
TEST(Optim, CapturableStepsMatchOrdinarySteps) {
  for (const char* name : {"sgd", "adam", "adamw", "lars", "lamb"}) {
    SCOPED_TRACE(name);
    auto run = [&](bool capturable) {
      Variable w{Tensor::full({3, 2}, 0.7), true}, b{Tensor::full({5}, -0.3), true};
      OptimizerConfig c;
      c.name = name;
      c.lr = 0.1;
      c.momentum = 0.9;
      c.dampening = 0.3;
      c.weight_decay = 0.05;
      auto opt = make_optimizer({{"fc.weight", w}, {"fc.bias", b}}, c);
      opt->set_capturable(capturable);
      EXPECT_EQ(opt->capturable(), capturable);
      Generator gen(3);
      for (int i = 0; i < 6; ++i) {
        if (i == 2) opt->add_group({"fc.bias"}, 0.02);
        opt->set_lr(0.1 / (1 + i));
        w.set_grad(Tensor::uniform({3, 2}, -1, 1, gen));
        b.set_grad(Tensor::uniform({5}, -1, 1, gen));
        opt->step();
      }
      std::vector<float> out = w.data().to_vector<float>();
      for (float v : b.data().to_vector<float>()) out.push_back(v);
      return out;
    };
    const auto plain = run(false), captured = run(true);
    EXPECT_EQ(captured, plain);
    EXPECT_NE(plain, std::vector<float>(plain.size(), 0.7f));
  }
  std::vector<std::pair<std::string, Variable>> ps;
  for (int i = 0; i < Optimizer::kMaxCapturableGroups + 1; ++i) {
    char name[16];  // (snprintf: GCC 12 warns falsely on "p" + std::to_string(i))
    std::snprintf(name, sizeof(name), "p%d", i);
    ps.push_back({name, Variable(Tensor::full({1}, 1.0), true)});
  }
  auto opt = make_optimizer(ps, OptimizerConfig());
  opt->set_capturable(true);
  for (int i = 1; i <= Optimizer::kMaxCapturableGroups; ++i) opt->add_group({ps[i].first}, 0.1);
  for (auto& [n, v] : ps) v.set_grad(Tensor::full({1}, 1.0));
  EXPECT_THROW(opt->step(), std::invalid_argument);
}

TEST(LrSchedule, Shapes) {
  ScheduleConfig c;
  c.base_lr = 0.1;
  c.total_steps = 100;
  EXPECT_DOUBLE_EQ(lr_at(c, 57), 0.1);
  c.name = "cosine";
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.1);
  EXPECT_NEAR(lr_at(c, 50), 0.05, 1e-12);
  EXPECT_NEAR(lr_at(c, 100), 0.0, 1e-12);
  c.name = "step";
  c.steps_per_epoch = 10;
  c.step_epochs = 2;
  EXPECT_DOUBLE_EQ(lr_at(c, 19), 0.1);
  EXPECT_NEAR(lr_at(c, 20), 0.01, 1e-12);
  EXPECT_NEAR(lr_at(c, 45), 0.001, 1e-12);
  c.name = "warmup_cosine";
  c.warmup_steps = 10;
  EXPECT_NEAR(lr_at(c, 0), 0.01, 1e-12);
  EXPECT_NEAR(lr_at(c, 9), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(c, 10), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(c, 55), 0.05, 1e-12);
  c.warmup_steps = 0;  // (onecycle and plateau take none)
  c.name = "onecycle";
  c.base_lr = 1.0;
  EXPECT_NEAR(lr_at(c, 0), 0.04, 1e-12);   // max / div_factor
  EXPECT_NEAR(lr_at(c, 29), 1.0, 1e-12);   // peak at pct_start * total - 1
  EXPECT_NEAR(lr_at(c, 99), 4e-6, 1e-12);  // initial / final_div_factor
  EXPECT_GT(lr_at(c, 15), lr_at(c, 5));
  c.name = "plateau";  // the rate before any reduction; the trainer holds the current one
  EXPECT_DOUBLE_EQ(lr_at(c, 57), 1.0);
  EXPECT_NO_THROW(check_schedule(c));
  c.name = "triangular";
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
}

// cosine_restarts: PyTorch's CosineAnnealingWarmRestarts stepped with the fractional epoch.
// With T_mult 1 every cycle is T_0 epochs; with T_mult 2 the cycles are 1, 2, 4, ... T_0; the
// rate restarts at base_lr on each cycle's first step and is halfway down at its middle.
TEST(LrSchedule, CosineRestartsFollowSgdr) {
  ScheduleConfig c;
  c.name = "cosine_restarts";
  c.base_lr = 1.0;
  c.min_lr = 0.2;
  c.total_steps = 100;
  c.steps_per_epoch = 4;
  c.restart_epochs = 2;
  check_schedule(c);
  const double mid = 0.6;  // (1.0 + 0.2) / 2
  auto at_pct = [&](double pct) { return 0.2 + 0.4 * (std::cos(M_PI * pct) + 1); };
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 1.0);
  EXPECT_NEAR(lr_at(c, 2), at_pct(0.25), 1e-12);      // epoch 0.5 of 2
  EXPECT_NEAR(lr_at(c, 4), mid, 1e-12);               // epoch 1
  EXPECT_NEAR(lr_at(c, 7), at_pct(1.75 / 2), 1e-12);  // epoch 1.75
  EXPECT_DOUBLE_EQ(lr_at(c, 8), 1.0);                 // epoch 2: the restart
  EXPECT_NEAR(lr_at(c, 12), mid, 1e-12);
  c.restart_epochs = 1;
  c.restart_mult = 2;  // cycles [0, 1), [1, 3), [3, 7), [7, 15)
  for (int64_t restart : {0, 4, 12, 28}) EXPECT_DOUBLE_EQ(lr_at(c, restart), 1.0) << restart;
  EXPECT_NEAR(lr_at(c, 8), mid, 1e-12);                // epoch 2: 1 into a cycle of 2
  EXPECT_NEAR(lr_at(c, 20), mid, 1e-12);               // epoch 5: 2 into 4
  EXPECT_NEAR(lr_at(c, 27), at_pct(3.75 / 4), 1e-12);  // the last step before a restart
  // Epochs of different lengths (--accumulation-schedule): the fraction is of each epoch's own.
  c.epoch_starts = {0, 4, 6, 10, 12};
  EXPECT_NEAR(lr_at(c, 5), at_pct(0.5 / 2), 1e-12);  // epoch 1 + 1/2
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1.0);               // epoch 3: a restart
  // A warmup ramps the first steps as for the other schedules.
  c.epoch_starts.clear();
  c.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.25);
  c.restart_mult = 0;
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
}

// linear and polynomial: PyTorch's LinearLR(1, 0, total) and PolynomialLR(total, power) from
// base_lr down to min_lr; with a warmup, Hugging Face's schedules with warmup (the ramp, then
// the decay over the steps after it; the ramp is mlai's, (step + 1) / warmup, as for every
// other schedule: Hugging Face's starts at 0).
TEST(LrSchedule, LinearAndPolynomialDecayToMinLr) {
  ScheduleConfig c;
  c.base_lr = 0.1;
  c.total_steps = 100;
  c.name = "linear";
  EXPECT_NO_THROW(check_schedule(c));
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.1);
  EXPECT_NEAR(lr_at(c, 25), 0.075, 1e-15);
  EXPECT_NEAR(lr_at(c, 99), 0.001, 1e-15);
  EXPECT_NEAR(lr_at(c, 100), 0.0, 1e-15);
  c.min_lr = 0.01;
  EXPECT_NEAR(lr_at(c, 50), 0.055, 1e-15);
  EXPECT_NEAR(lr_at(c, 150), 0.01, 1e-15);  // past the horizon: the floor
  c.name = "polynomial";
  c.power = 2;
  EXPECT_NEAR(lr_at(c, 50), 0.01 + 0.09 * 0.25, 1e-15);
  EXPECT_NEAR(lr_at(c, 90), 0.01 + 0.09 * 0.01, 1e-15);
  c.power = 1;  // PolynomialLR's default power is linear decay
  c.min_lr = 0;
  EXPECT_NEAR(lr_at(c, 25), 0.075, 1e-15);
  c.power = 0;
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
  c.power = 1;
  c.name = "linear";
  c.warmup_steps = 10;
  EXPECT_NEAR(lr_at(c, 0), 0.01, 1e-15);
  EXPECT_NEAR(lr_at(c, 9), 0.1, 1e-15);
  EXPECT_NEAR(lr_at(c, 10), 0.1, 1e-15);
  EXPECT_NEAR(lr_at(c, 55), 0.05, 1e-15);  // (100 - 55) / (100 - 10) of the way
  EXPECT_NEAR(lr_at(c, 100), 0.0, 1e-15);
}

// MultiStepLR and ExponentialLR stepped once an epoch: within epoch e (from 0) the rate is
// base x gamma^(milestones <= e), and base x gamma^e.
TEST(LrSchedule, MultiStepAndExponentialChangeAtEpochBoundaries) {
  ScheduleConfig c;
  c.base_lr = 0.1;
  c.total_steps = 100;
  c.steps_per_epoch = 10;
  c.name = "multistep";
  EXPECT_THROW(check_schedule(c), std::invalid_argument);  // no milestones
  c.milestones = {2, 5};
  EXPECT_NO_THROW(check_schedule(c));
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(c, 19), 0.1);
  EXPECT_NEAR(lr_at(c, 20), 0.01, 1e-15);
  EXPECT_NEAR(lr_at(c, 49), 0.01, 1e-15);
  EXPECT_NEAR(lr_at(c, 50), 0.001, 1e-15);
  EXPECT_NEAR(lr_at(c, 99), 0.001, 1e-15);
  c.milestones = {5, 5};
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
  c.milestones = {0, 5};
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
  c.name = "exponential";
  c.gamma = 0.5;
  EXPECT_DOUBLE_EQ(lr_at(c, 9), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 0.05);
  EXPECT_DOUBLE_EQ(lr_at(c, 35), 0.0125);
}

// Epochs of different lengths (--accumulation-schedule): the epoch-interval schedules change
// where each epoch starts, not every steps_per_epoch steps.
TEST(LrSchedule, EpochScheduleFollowsEpochStarts) {
  ScheduleConfig c;
  c.base_lr = 0.1;
  c.total_steps = 32;
  c.steps_per_epoch = 18;            // (epoch 0's; ignored with epoch_starts)
  c.epoch_starts = {0, 18, 23, 32};  // 18, 5 and 9 steps
  c.name = "multistep";
  c.milestones = {1, 2};
  EXPECT_DOUBLE_EQ(lr_at(c, 17), 0.1);
  EXPECT_NEAR(lr_at(c, 18), 0.01, 1e-15);
  EXPECT_NEAR(lr_at(c, 22), 0.01, 1e-15);
  EXPECT_NEAR(lr_at(c, 23), 0.001, 1e-15);  // (18 steps an epoch would say epoch 1)
  c.name = "exponential";
  c.gamma = 0.5;
  EXPECT_DOUBLE_EQ(lr_at(c, 22), 0.05);
  EXPECT_DOUBLE_EQ(lr_at(c, 31), 0.025);
  c.name = "step";
  c.step_epochs = 2;
  EXPECT_DOUBLE_EQ(lr_at(c, 22), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(c, 23), 0.05);
}

// --warmup-steps in front of another schedule: its rate times (step + 1) / warmup, then the
// schedule as it was (Goyal et al.: 5 epochs of warmup, then MultiStepLR).
TEST(LrSchedule, WarmupRampsAnyStepSchedule) {
  ScheduleConfig c;
  c.base_lr = 0.4;
  c.total_steps = 100;
  c.steps_per_epoch = 10;
  c.name = "multistep";
  c.milestones = {3};
  c.warmup_steps = 20;
  EXPECT_NO_THROW(check_schedule(c));
  EXPECT_NEAR(lr_at(c, 0), 0.4 / 20, 1e-15);
  EXPECT_NEAR(lr_at(c, 9), 0.4 * 10 / 20, 1e-15);
  EXPECT_NEAR(lr_at(c, 19), 0.4, 1e-15);
  EXPECT_NEAR(lr_at(c, 25), 0.4, 1e-15);
  EXPECT_NEAR(lr_at(c, 30), 0.04, 1e-15);
  c.name = "cosine";  // the cosine spans all 100 steps; the ramp scales its first 20
  ScheduleConfig plain = c;
  plain.warmup_steps = 0;
  EXPECT_NEAR(lr_at(c, 4), lr_at(plain, 4) * 5 / 20, 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(c, 20), lr_at(plain, 20));
  c.name = "constant";
  EXPECT_NEAR(lr_at(c, 1), 0.04, 1e-15);
  c.name = "onecycle";
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
  c.name = "multistep";
  c.warmup_steps = 100;
  EXPECT_THROW(check_schedule(c), std::invalid_argument);
}

// ReduceLROnPlateau's rates after each metric, as torch.optim.lr_scheduler.ReduceLROnPlateau
// 2.15 gives them for the same settings (checked there; the comments follow its rule).
TEST(LrSchedule, PlateauFollowsReduceLROnPlateau) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  PlateauConfig c;
  c.factor = 0.5;
  c.patience = 2;
  c.threshold = 0.1;  // better: below 0.9 x best
  c.cooldown = 1;
  c.min_lr = 0.2;
  PlateauState s;
  s.lr = 1.0;
  const std::vector<std::pair<double, double>> seq = {
      {1.0, 1.0},    // first: the best
      {0.95, 1.0},   // not below 0.9: bad 1
      {0.8, 1.0},    // new best
      {0.79, 1.0},   // bad 1
      {0.78, 1.0},   // bad 2
      {0.77, 0.5},   // bad 3 > patience: halved, cooldown 1
      {0.5, 0.5},    // best (and the cooldown ends)
      {0.6, 0.5},    // bad 1
      {0.6, 0.5},    // bad 2
      {0.6, 0.25},   // bad 3: halved
      {0.6, 0.25},   // in cooldown: not counted
      {0.6, 0.25},   // bad 1
      {0.6, 0.25},   // bad 2
      {0.6, 0.2},    // bad 3: 0.125, floored at min_lr
      {nan, 0.2},    // cooldown
      {nan, 0.2},    // a NaN is never better: bad 1
      {nan, 0.2}};   // bad 2
  for (size_t i = 0; i < seq.size(); ++i) {
    const double before = s.lr;
    const bool lowered = plateau_step(c, s, seq[i].first);
    EXPECT_DOUBLE_EQ(s.lr, seq[i].second) << "validation " << i;
    EXPECT_EQ(lowered, s.lr < before) << "validation " << i;
  }
  EXPECT_DOUBLE_EQ(s.best, 0.5);
  // At the floor a further drop changes nothing and says so.
  EXPECT_FALSE(plateau_step(c, s, nan));
  EXPECT_DOUBLE_EQ(s.lr, 0.2);
  // mode "max" (accuracy), patience 1, no cooldown.
  PlateauConfig m;
  m.maximize = true;
  m.patience = 1;
  PlateauState t;
  t.lr = 1.0;
  const std::vector<std::pair<double, double>> acc = {
      {0.5, 1.0}, {0.6, 1.0}, {0.6, 1.0}, {0.6, 0.1}, {0.7, 0.1}, {0.7, 0.1}, {0.7, 0.01}, {0.9, 0.01}};
  for (size_t i = 0; i < acc.size(); ++i) {
    plateau_step(m, t, acc[i].first);
    EXPECT_NEAR(t.lr, acc[i].second, 1e-15) << "validation " << i;
  }
}

}  // namespace
}  // namespace mlai::nn
