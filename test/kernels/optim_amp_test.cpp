// The fused optimizer steps with mixed-precision inputs (fp16/bf16 gradients, working copies,
// a device inv_scale and skip flag), the check-only finite pass and the loss-scale update:
// on the CPU against the plain float32 path, and CUDA against the CPU (skips without a GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "optim_problem.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

Tensor rand(const Shape& s, DType dt, double lo, double hi, uint64_t seed) {
  Generator g(seed);
  return Tensor::uniform(s, lo, hi, g).to(dt);
}
std::vector<float> f32(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::kFloat32).to_vector<float>();
}

// `count` tensors of odd sizes: fp32 masters and state, gradients in `gdt` (x 1024, as if
// loss-scaled), working copies in gdt when gdt is not float32.
Problem make(DType gdt, int count, uint64_t seed) {
  Problem p;
  for (int t = 0; t < count; ++t) {
    const int64_t n = 1 + (t * 37 + 11) % 300 + (t == 1 ? 70001 : 0);
    p.params.push_back(rand({n}, DType::kFloat32, -1, 1, seed + 10 * t));
    p.grads.push_back(rand({n}, DType::kFloat32, -1024, 1024, seed + 10 * t + 1).to(gdt));
    if (gdt != DType::kFloat32) p.working.push_back(p.params.back().to(gdt));
    p.s1.push_back(rand({n}, DType::kFloat32, -0.1, 0.1, seed + 10 * t + 2));
    p.s2.push_back(rand({n}, DType::kFloat32, 0, 0.01, seed + 10 * t + 3));
  }
  return p;
}
kernels::SgdArgs sgd_args() {
  kernels::SgdArgs a;
  a.lr = 0.05;
  a.momentum = 0.9;
  a.weight_decay = 1e-4;
  a.nesterov = true;
  a.step = 3;
  a.grad_scale = 0.5f;
  return a;
}
kernels::AdamArgs adam_args() {
  kernels::AdamArgs a;
  a.lr = 1e-3;
  a.weight_decay = 0.01;
  a.decoupled = true;
  a.step = 3;
  a.grad_scale = 0.5f;
  return a;
}

void step(Problem& p, bool adam, const Tensor& inv, const Tensor& skip) {
  if (adam) {
    adam_step_(p.params, p.grads, p.working, p.s1, p.s2, adam_args(), inv, skip);
  } else {
    sgd_step_(p.params, p.grads, p.working, p.s1, sgd_args(), inv, skip);
  }
}

// fp16/bf16 gradients read in float and times inv_scale give exactly what float32 gradients
// holding the same values and pre-multiplied by inv_scale (a power of two) give; the working
// copies are the updated masters rounded to the gradient dtype.
TEST(OptimAmp, LowPrecisionGradientsMatchTheFloatPath) {
  for (DType gdt : {DType::kFloat16, DType::kBFloat16}) {
    for (bool adam : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(gdt)) + (adam ? " adam" : " sgd"));
      Problem amp = make(gdt, 30, 5);
      Problem ref;
      for (size_t i = 0; i < amp.params.size(); ++i) {
        ref.params.push_back(amp.params[i].clone());
        ref.grads.push_back(scale(amp.grads[i].to(DType::kFloat32), 1.0 / 1024));
        ref.s1.push_back(amp.s1[i].clone());
        ref.s2.push_back(amp.s2[i].clone());
      }
      step(amp, adam, Tensor::full({1}, 1.0 / 1024), Tensor());
      step(ref, adam, Tensor(), Tensor());
      for (size_t i = 0; i < amp.params.size(); ++i) {
        ASSERT_EQ(f32(amp.params[i]), f32(ref.params[i])) << "master " << i;
        ASSERT_EQ(f32(amp.s1[i]), f32(ref.s1[i])) << "state " << i;
        ASSERT_EQ(f32(amp.working[i]), f32(ref.params[i].to(gdt))) << "working copy " << i;
      }
    }
  }
}

TEST(OptimAmp, SkipFlagLeavesEverythingAlone) {
  Problem p = make(DType::kFloat16, 5, 9);
  const Problem before = to(p, Device::cpu());
  std::vector<std::vector<float>> w0;
  for (auto& t : p.params) w0.push_back(f32(t));
  for (bool adam : {false, true}) step(p, adam, Tensor::full({1}, 0.25), Tensor::full({1}, 1.0));
  for (size_t i = 0; i < p.params.size(); ++i) {
    EXPECT_EQ(f32(p.params[i]), w0[i]);
    EXPECT_EQ(f32(p.working[i]), f32(before.working[i]));
    EXPECT_EQ(f32(p.s1[i]), f32(before.s1[i]));
  }
}

// The step number read on the device: step 5 less an offset of 4 is step 1 (SGD's momentum
// buffer starts as the gradient, Adam's bias correction has t = 1), bit for bit what a step
// numbered 1 on the host gives, and not what step 5 gives. A bad offset tensor is refused.
TEST(OptimAmp, StepOffsetIsSubtractedOnTheDevice) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "adam" : "sgd");
    // (three equal problems: to() on the same device would share the tensors)
    Problem host = make(DType::kFloat16, 30, 21), dev = make(DType::kFloat16, 30, 21),
            late = make(DType::kFloat16, 30, 21);
    kernels::SgdArgs s = sgd_args();
    s.dampening = 0.5;  // (so that a first step differs from a later one)
    s.nesterov = false;
    kernels::AdamArgs a = adam_args();
    const Tensor inv = Tensor::full({1}, 1.0 / 1024);
    auto run = [&](Problem& p, int64_t number, const Tensor& offset) {
      s.step = a.step = number;
      if (adam) {
        adam_step_(p.params, p.grads, p.working, p.s1, p.s2, a, inv, Tensor(), offset);
      } else {
        sgd_step_(p.params, p.grads, p.working, p.s1, s, inv, Tensor(), offset);
      }
    };
    run(host, 1, Tensor());
    run(dev, 5, Tensor::from_vector(std::vector<int64_t>{4}, {1}));
    run(late, 5, Tensor());
    for (size_t i = 0; i < host.params.size(); ++i) {
      ASSERT_EQ(f32(dev.params[i]), f32(host.params[i])) << "master " << i;
      ASSERT_EQ(f32(dev.s1[i]), f32(host.s1[i])) << "state " << i;
      ASSERT_EQ(f32(dev.working[i]), f32(host.working[i])) << "working copy " << i;
    }
    EXPECT_NE(f32(late.params[1]), f32(host.params[1])) << "step 5 is not step 1";
    EXPECT_THROW(run(dev, 5, Tensor::full({1}, 4.0)), std::invalid_argument);  // float32
  }
}

// A capturable step's {lr, step} on the device replace the host's (here deliberately wrong),
// and the step offset still applies: bit for bit the step with the right host values.
TEST(OptimAmp, LrAndStepAreReadOnTheDevice) {
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "adam" : "sgd");
    Problem host = make(DType::kBFloat16, 30, 31), dev = make(DType::kBFloat16, 30, 31);
    kernels::SgdArgs s = sgd_args();
    s.dampening = 0.5;
    s.nesterov = false;
    kernels::AdamArgs a = adam_args();
    const Tensor inv = Tensor::full({1}, 1.0 / 1024);
    auto run = [&](Problem& p, double lr, int64_t number, const Tensor& offset,
                   const Tensor& lr_step) {
      s.lr = a.lr = lr;
      s.step = a.step = number;
      if (adam) {
        adam_step_(p.params, p.grads, p.working, p.s1, p.s2, a, inv, Tensor(), offset, lr_step);
      } else {
        sgd_step_(p.params, p.grads, p.working, p.s1, s, inv, Tensor(), offset, lr_step);
      }
    };
    run(host, 0.03, 2, Tensor(), Tensor());  // step 2 at rate 0.03
    run(dev, 7.0, 40, Tensor::from_vector(std::vector<int64_t>{1}, {1}),
        Tensor::from_vector(std::vector<double>{0.03, 3.0}, {2}));  // 3 - 1 = 2
    for (size_t i = 0; i < host.params.size(); ++i) {
      ASSERT_EQ(f32(dev.params[i]), f32(host.params[i])) << "master " << i;
      ASSERT_EQ(f32(dev.s1[i]), f32(host.s1[i])) << "state " << i;
    }
    EXPECT_THROW(run(dev, 0.03, 2, Tensor(), Tensor::full({2}, 1.0)), std::invalid_argument);
  }
}

TEST(OptimAmp, CheckOnlyPassFlagsWithoutWriting) {
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    std::vector<Tensor> ts{rand({1000}, dt, -5, 5, 1), rand({7}, DType::kFloat32, -5, 5, 2)};
    const auto a = f32(ts[0]), b = f32(ts[1]);
    Tensor found = Tensor::zeros({1});
    unscale_check_finite_(ts, Tensor(), found);
    EXPECT_EQ(found.item(), 0.0);
    EXPECT_EQ(f32(ts[0]), a);
    EXPECT_EQ(f32(ts[1]), b);
    ts[0].slice(500, 501).copy_from(Tensor::full({1}, INFINITY, dt));
    unscale_check_finite_(ts, Tensor(), found);
    EXPECT_EQ(found.item(), 1.0) << dtype_name(dt);
  }
}

TEST(OptimAmp, LossScaleUpdate) {
  Tensor scale = Tensor::from_vector(std::vector<float>{1024.0f, 1.0f / 1024}, {2});
  Tensor tracker = Tensor::zeros({1}, DType::kInt32), skipped = Tensor::zeros({1}, DType::kInt64);
  Tensor found = Tensor::zeros({1});
  update_loss_scale_(scale, tracker, skipped, found, 2.0, 0.5, 2);
  EXPECT_EQ(f32(scale), (std::vector<float>{1024.0f, 1.0f / 1024}));
  EXPECT_EQ(tracker.to_vector<int32_t>()[0], 1);
  update_loss_scale_(scale, tracker, skipped, found, 2.0, 0.5, 2);
  EXPECT_EQ(f32(scale), (std::vector<float>{2048.0f, 1.0f / 2048}));
  EXPECT_EQ(tracker.to_vector<int32_t>()[0], 0);
  fill_(found, 1.0);
  update_loss_scale_(scale, tracker, skipped, found, 2.0, 0.5, 2);
  EXPECT_EQ(f32(scale), (std::vector<float>{1024.0f, 1.0f / 1024}));
  EXPECT_EQ(skipped.to_vector<int64_t>()[0], 1);
  EXPECT_EQ(found.item(), 0.0) << "the flag is reset for the next step";
  // Growth stops where the scale would overflow float32.
  Tensor big = Tensor::from_vector(std::vector<float>{3e38f, 1.0f / 3e38f}, {2});
  update_loss_scale_(big, tracker, skipped, found, 2.0, 0.5, 1);
  EXPECT_EQ(f32(big)[0], 3e38f);
}

// clip_grad_value_: each element of the true gradient clamped to [-v, v], NaN kept.
TEST(OptimAmp, ClipValueClampsTheUnscaledGradient) {
  std::vector<Tensor> p{Tensor::zeros({4})};
  // Stored x 1024 (loss-scaled) and summed over 2 ranks: grad_scale 0.5, inv_scale 1/1024.
  std::vector<Tensor> g{Tensor::from_vector(std::vector<float>{3.0f, -0.5f, -10.0f, NAN}, {4})};
  g[0] = scale(g[0], 2048.0);
  kernels::SgdArgs a;
  a.lr = 1.0;
  a.grad_scale = 0.5f;
  a.clip_value = 1.0f;
  sgd_step_(p, g, {}, {}, a, Tensor::full({1}, 1.0 / 1024));
  const auto v = p[0].to_vector<float>();
  EXPECT_EQ(v[0], -1.0f);
  EXPECT_EQ(v[1], 0.5f);
  EXPECT_EQ(v[2], 1.0f);
  EXPECT_TRUE(std::isnan(v[3]));
}

// clip_grad_norm_: the factor makes the true gradients' global norm max_norm when it is
// larger, and leaves them alone otherwise.
TEST(OptimAmp, ClipNormFactor) {
  // True gradients (3, 4) and (12): norm 13. Stored x 8 (loss scale) and x 2 (two ranks).
  std::vector<Tensor> g{Tensor::from_vector(std::vector<float>{48, 64}, {2}).to(DType::kFloat16),
                        Tensor::from_vector(std::vector<float>{192}, {1})};
  const Tensor sq = squared_norm(g);
  EXPECT_FLOAT_EQ(static_cast<float>(sq.item()), 16.0f * 16.0f * 169.0f);
  const Tensor inv = Tensor::full({1}, 1.0 / 8);
  const double f = clip_norm_factor(sq, inv, 0.5, 6.5).item();              // halve: 13 -> 6.5
  EXPECT_NEAR(f, 1.0 / 8 * 6.5 / 13.0, 1e-6 / 16);                          // float arithmetic
  EXPECT_DOUBLE_EQ(clip_norm_factor(sq, inv, 0.5, 100.0).item(), 1.0 / 8);  // under: 1/scale only
  EXPECT_NEAR(clip_norm_factor(sum(Tensor::full({1}, 169.0)), Tensor(), 1.0, 1.0).item(), 1.0 / 13,
              1e-7);  // no scaler
  EXPECT_THROW(clip_norm_factor(sq, inv, 0.5, 0.0), std::invalid_argument);
}

// More tensors than one launch takes (kMaxTensorsPerLaunch), three dtypes, empty ones, and
// sizes from 1 to past one block's share: the multi-tensor sum of squares against a plain
// double sum, on the CPU.
std::vector<Tensor> many_gradients() {
  std::vector<Tensor> g;
  const DType dts[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  for (int t = 0; t < 61; ++t)
    g.push_back(rand({t == 7 ? 0 : 1 + (t * 977) % 20000}, dts[t % 3], -3, 3, 100 + t));
  return g;
}

TEST(OptimAmp, SquaredNormOfManyTensors) {
  const std::vector<Tensor> g = many_gradients();
  double want = 0;
  for (const Tensor& t : g)
    for (double v : t.to_double_vector()) want += v * v;
  const double got = squared_norm(g).item();
  EXPECT_NEAR(got, want, 1e-6 * want);
  EXPECT_THROW(squared_norm({}), std::invalid_argument);
}

// The weight average: each element is decay * avg + (1 - decay) * cur with both products
// rounded to float (as PyTorch's get_ema_avg_fn computes on float32 tensors), over more
// tensors than one CUDA launch takes; mismatched lists are refused.
TEST(WeightAverageKernel, EmaUpdateRoundsLikeFloatTensorArithmetic) {
  std::vector<Tensor> avg, cur;
  for (int t = 0; t < 30; ++t) {
    const int64_t n = 1 + (t * 53 + 7) % 400 + (t == 2 ? 5000 : 0);
    avg.push_back(rand({n}, DType::kFloat32, -2, 2, 100 + t));
    cur.push_back(rand({n}, DType::kFloat32, -2, 2, 200 + t));
  }
  std::vector<std::vector<float>> before;
  for (const Tensor& a : avg) before.push_back(a.to_vector<float>());
  const double decay = 0.999;
  ema_update_(avg, cur, decay);
  const float d = static_cast<float>(decay), e = static_cast<float>(1.0 - decay);
  for (size_t t = 0; t < avg.size(); ++t) {
    const auto got = avg[t].to_vector<float>(), c = cur[t].to_vector<float>();
    for (size_t i = 0; i < got.size(); ++i) {
      // (exact with this build's flags; a build allowed to fuse into an FMA may differ in the
      // last bit, hence the bound of a few float ulps)
      const float kept = d * before[t][i], added = e * c[i];
      const float want = kept + added;
      ASSERT_NEAR(got[i], want, 4e-7f * std::max(1.0f, std::fabs(want)))
          << "tensor " << t << " element " << i;
    }
  }
  EXPECT_THROW(ema_update_({avg[0]}, {cur[1]}, decay), std::invalid_argument);
  EXPECT_THROW(ema_update_(avg, {cur[0]}, decay), std::invalid_argument);
  EXPECT_THROW(ema_update_({avg[0].to(DType::kFloat16)}, {cur[0].to(DType::kFloat16)}, decay),
               std::invalid_argument);
  EXPECT_THROW(ema_update_({avg[0], avg[0]}, {cur[0], cur[0]}, decay), std::invalid_argument);
  EXPECT_THROW(ema_update_({avg[0]}, {avg[0]}, decay), std::invalid_argument);
}

TEST(OptimAmpCuda, EmaUpdateMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> avg, cur, gavg, gcur;
  for (int t = 0; t < 50; ++t) {  // 50 tensors: more than one launch
    const int64_t n = 1 + (t * 37 + 11) % 300 + (t == 1 ? 70001 : 0);
    avg.push_back(rand({n}, DType::kFloat32, -1, 1, 300 + t));
    cur.push_back(rand({n}, DType::kFloat32, -1, 1, 400 + t));
    gavg.push_back(avg.back().to(gpu));
    gcur.push_back(cur.back().to(gpu));
  }
  for (int k = 0; k < 3; ++k) {
    ema_update_(avg, cur, 0.9);
    ema_update_(gavg, gcur, 0.9);
  }
  for (size_t t = 0; t < avg.size(); ++t)  // rounded products and sum on both: a few ulps at most
    EXPECT_LT(max_rel_error(gavg[t].to(Device::cpu()), avg[t]), 1e-6) << "tensor " << t;
}

TEST(OptimAmpCuda, ClipMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  std::vector<Tensor> cpu = many_gradients(), dev;
  for (const Tensor& t : cpu) dev.push_back(t.to(gpu));
  const Tensor sq = squared_norm(cpu), gsq = squared_norm(dev);
  EXPECT_LT(max_rel_error(gsq.to(Device::cpu()), sq), 1e-5);
  const Tensor inv = Tensor::full({1}, 0.25);
  EXPECT_LT(max_rel_error(clip_norm_factor(gsq, inv.to(gpu), 0.5, 3.0).to(Device::cpu()),
                          clip_norm_factor(sq, inv, 0.5, 3.0)),
            1e-5);
}

TEST(OptimAmpCuda, StepsMatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  for (DType gdt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (bool adam : {false, true}) {
      for (float flag : {0.0f, 1.0f}) {
        SCOPED_TRACE(std::string(dtype_name(gdt)) + (adam ? " adam" : " sgd") +
                     (flag != 0 ? " skipped" : ""));
        Problem cpu = make(gdt, 50, 17);  // 50 tensors: more than one launch
        Problem dev = to(cpu, gpu);
        const Tensor inv = Tensor::full({1}, 1.0 / 1024), skip = Tensor::full({1}, flag);
        step(cpu, adam, inv, skip);  // sgd_args()/adam_args() leave clip_value infinite
        step(dev, adam, inv.to(gpu), skip.to(gpu));
        for (size_t i = 0; i < cpu.params.size(); ++i) {
          // Same float arithmetic; the GPU may contract a multiply-add into an FMA.
          EXPECT_LT(max_rel_error(dev.params[i].to(Device::cpu()), cpu.params[i]), 1e-5) << i;
          EXPECT_LT(max_rel_error(dev.s1[i].to(Device::cpu()), cpu.s1[i]), 1e-5) << i;
          if (!cpu.working.empty()) {  // one rounding step of the dtype at most
            EXPECT_LT(max_rel_error(dev.working[i].to(Device::cpu()), cpu.working[i]),
                      gdt == DType::kFloat16 ? 1e-3 : 8e-3)
                << i;
          }
        }
      }
    }
  }
}

// The step number read on the device (the AMP path's skipped-step offset), against the CPU:
// SGD's first step and Adam's bias terms worked out in the kernel.
TEST(OptimAmpCuda, StepOffsetMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  for (bool adam : {false, true}) {
    for (int64_t offset : {4, 2}) {  // step 5 as step 1, and as step 3
      SCOPED_TRACE(std::string(adam ? "adam" : "sgd") + " offset " + std::to_string(offset));
      Problem cpu = make(DType::kFloat16, 50, 23);
      Problem dev = to(cpu, gpu);
      kernels::SgdArgs s = sgd_args();
      s.dampening = 0.5;
      s.nesterov = false;
      kernels::AdamArgs a = adam_args();
      s.step = a.step = 5;
      const Tensor inv = Tensor::full({1}, 1.0 / 1024);
      const Tensor off = Tensor::from_vector(std::vector<int64_t>{offset}, {1});
      for (Problem* p : {&cpu, &dev}) {
        const Device d = p == &cpu ? Device::cpu() : gpu;
        if (adam) {
          adam_step_(p->params, p->grads, p->working, p->s1, p->s2, a, inv.to(d), Tensor(),
                     off.to(d));
        } else {
          sgd_step_(p->params, p->grads, p->working, p->s1, s, inv.to(d), Tensor(), off.to(d));
        }
      }
      for (size_t i = 0; i < cpu.params.size(); ++i) {
        EXPECT_LT(max_rel_error(dev.params[i].to(Device::cpu()), cpu.params[i]), 1e-5) << i;
        EXPECT_LT(max_rel_error(dev.s1[i].to(Device::cpu()), cpu.s1[i]), 1e-5) << i;
      }
    }
  }
}

// The capturable step's device {lr, step} on the GPU against the CPU.
TEST(OptimAmpCuda, DeviceLrAndStepMatchTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  for (bool adam : {false, true}) {
    SCOPED_TRACE(adam ? "adam" : "sgd");
    Problem cpu = make(DType::kFloat16, 50, 29);
    Problem dev = to(cpu, gpu);
    kernels::SgdArgs s = sgd_args();
    kernels::AdamArgs a = adam_args();
    s.lr = a.lr = 7.0;  // wrong on purpose: the device values rule
    const Tensor inv = Tensor::full({1}, 1.0 / 1024);
    const Tensor lr_step = Tensor::from_vector(std::vector<double>{0.01, 4.0}, {2});
    for (Problem* p : {&cpu, &dev}) {
      const Device d = p == &cpu ? Device::cpu() : gpu;
      if (adam) {
        adam_step_(p->params, p->grads, p->working, p->s1, p->s2, a, inv.to(d), Tensor(),
                   Tensor(), lr_step.to(d));
      } else {
        sgd_step_(p->params, p->grads, p->working, p->s1, s, inv.to(d), Tensor(), Tensor(),
                  lr_step.to(d));
      }
    }
    for (size_t i = 0; i < cpu.params.size(); ++i) {
      EXPECT_LT(max_rel_error(dev.params[i].to(Device::cpu()), cpu.params[i]), 1e-5) << i;
      EXPECT_LT(max_rel_error(dev.s1[i].to(Device::cpu()), cpu.s1[i]), 1e-5) << i;
    }
  }
}

TEST(OptimAmpCuda, LossScaleUpdateMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  Tensor scale = Tensor::from_vector(std::vector<float>{65536.0f, 1.0f / 65536}, {2});
  Tensor tracker = Tensor::zeros({1}, DType::kInt32), skipped = Tensor::zeros({1}, DType::kInt64);
  Tensor found = Tensor::zeros({1});
  Tensor gs = scale.to(gpu), gt = tracker.to(gpu), gk = skipped.to(gpu), gf = found.to(gpu);
  for (int s = 0; s < 9; ++s) {
    const double bad = (s % 4 == 3) ? 1.0 : 0.0;
    fill_(found, bad);
    fill_(gf, bad);
    update_loss_scale_(scale, tracker, skipped, found, 2.0, 0.5, 2);
    update_loss_scale_(gs, gt, gk, gf, 2.0, 0.5, 2);
    EXPECT_EQ(f32(gs), f32(scale)) << "step " << s;
    EXPECT_EQ(gt.to(Device::cpu()).to_vector<int32_t>(), tracker.to_vector<int32_t>());
    EXPECT_EQ(gk.to(Device::cpu()).to_vector<int64_t>(), skipped.to_vector<int64_t>());
    EXPECT_EQ(gf.to(Device::cpu()).item(), 0.0);
  }
}

}  // namespace
}  // namespace mlai::tensor
