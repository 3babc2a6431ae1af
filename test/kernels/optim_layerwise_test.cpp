// LARS and LAMB, the layer-wise adaptive steps: the CPU twins against a float64 reference of
// timm's update rules on random tensors (one of them spanning several of the CUDA steps'
// norm chunks), with fp16/bf16 gradients and working copies, a device 1/loss-scale, value
// clipping and the skip flag; and the CUDA steps against the CPU twins (skip without a GPU).
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

// `count` tensors: float32 masters in [-1, 1] (tensor 2 all zeros: its ratio is 1), float32
// state, gradients in `gdt` scaled by 1024 (as if loss-scaled), working copies where gdt is
// 16-bit. Tensor 1 has 70001 elements: five norm chunks on a GPU.
Problem make(DType gdt, int count, uint64_t seed) {
  Problem p;
  for (int t = 0; t < count; ++t) {
    const int64_t n = 1 + (t * 37 + 11) % 300 + (t == 1 ? 70000 : 0);
    Generator g(seed + 10 * t);
    Tensor w = Tensor::uniform({n}, -1, 1, g);
    if (t == 2) w = Tensor::zeros({n});
    p.params.push_back(w);
    p.grads.push_back(Tensor::uniform({n}, -1024, 1024, g).to(gdt));
    if (gdt != DType::kFloat32) p.working.push_back(w.to(gdt));
    p.s1.push_back(Tensor::uniform({n}, -0.1, 0.1, g));
    p.s2.push_back(Tensor::uniform({n}, 0, 0.01, g));
  }
  return p;
}
std::vector<double> f64(const Tensor& t) { return t.to(Device::cpu()).to_double_vector(); }
bool same(const Tensor& a, const Tensor& b) { return f64(a) == f64(b); }

kernels::LarsArgs lars_args() {
  kernels::LarsArgs a;
  a.sgd.lr = 0.5;
  a.sgd.momentum = 0.9;
  a.sgd.dampening = 0.1;
  a.sgd.weight_decay = 5e-4;
  a.trust_coefficient = 0.02;
  a.sgd.step = 3;
  a.sgd.grad_scale = 0.5f;
  return a;
}
kernels::LambArgs lamb_args() {
  kernels::LambArgs a;
  a.adam.lr = 0.01;
  a.adam.weight_decay = 0.01;
  a.adam.step = 3;
  a.adam.grad_scale = 0.5f;
  return a;
}

double clampd(double d, double c) { return std::max(-c, std::min(c, d)); }
double norm(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// timm's Lars.step for one tensor, in float64 (gs: every factor the gradient is read with).
void lars_reference(std::vector<double>& p, std::vector<double> d, std::vector<double>& buf,
                    const kernels::LarsArgs& a, double gs, double clip) {
  for (double& v : d) v = clampd(v * gs, clip);
  if (a.sgd.weight_decay != 0) {
    const double wn = norm(p), gn = norm(d);
    double r =
        wn > 0 && gn > 0 ? a.trust_coefficient * wn / (gn + wn * a.sgd.weight_decay + a.eps) : 1.0;
    if (a.trust_clip) r = std::min(r / a.sgd.lr, 1.0);
    for (size_t i = 0; i < d.size(); ++i) d[i] = (d[i] + a.sgd.weight_decay * p[i]) * r;
  }
  for (size_t i = 0; i < d.size(); ++i) {
    buf[i] = a.sgd.step == 1 ? d[i] : a.sgd.momentum * buf[i] + (1 - a.sgd.dampening) * d[i];
    const double step = a.sgd.nesterov ? d[i] + a.sgd.momentum * buf[i] : buf[i];
    p[i] -= a.sgd.lr * step;
  }
}

// timm's Lamb.step for one tensor (no global gradient clipping), in float64.
void lamb_reference(std::vector<double>& p, std::vector<double> d, std::vector<double>& m,
                    std::vector<double>& v, const kernels::LambArgs& a, double gs, double clip) {
  const double t = static_cast<double>(a.adam.step);
  const double bc1 = 1 - std::pow(a.adam.beta1, t), bc2 = 1 - std::pow(a.adam.beta2, t);
  std::vector<double> u(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double g = clampd(d[i] * gs, clip);
    m[i] = a.adam.beta1 * m[i] + (1 - a.adam.beta1) * g;
    v[i] = a.adam.beta2 * v[i] + (1 - a.adam.beta2) * g * g;
    u[i] =
        (m[i] / bc1) / (std::sqrt(v[i]) / std::sqrt(bc2) + a.adam.eps) + a.adam.weight_decay * p[i];
  }
  double r = 1;
  if (a.adam.weight_decay != 0) {
    const double wn = norm(p), un = norm(u);
    if (wn > 0 && un > 0) r = wn / un;
    if (a.trust_clip) r = std::min(r, 1.0);
  }
  for (size_t i = 0; i < p.size(); ++i) p[i] -= a.adam.lr * r * u[i];
}

// Largest |a - b| / (|b| + floor) over a tensor and its reference.
double max_err(const Tensor& got, const std::vector<double>& want, double floor) {
  const auto g = f64(got);
  double e = 0;
  for (size_t i = 0; i < want.size(); ++i)
    e = std::max(e, std::abs(g[i] - want[i]) / (std::abs(want[i]) + floor));
  return e;
}

enum class Kind { kLars, kLamb };

void step(Problem& p, Kind kind, const kernels::LarsArgs& la, const kernels::LambArgs& ma,
          Tensor* scratch, const Tensor& inv = Tensor(), const Tensor& skip = Tensor(),
          const Tensor& offset = Tensor(), const Tensor& lr_step = Tensor()) {
  if (kind == Kind::kLars) {
    lars_step_(p.params, p.grads, p.working, p.s1, la, scratch, inv, skip, offset, lr_step);
  } else {
    lamb_step_(p.params, p.grads, p.working, p.s1, p.s2, ma, scratch, inv, skip, offset, lr_step);
  }
}

// Each option against the reference: weight decay (adapted) or not, trust_clip, nesterov,
// value clipping, and every gradient dtype with a device inv_scale.
TEST(OptimLayerwise, CpuMatchesTheFloat64Reference) {
  for (Kind kind : {Kind::kLars, Kind::kLamb}) {
    for (DType gdt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (int variant = 0; variant < 4; ++variant) {
        SCOPED_TRACE(std::string(kind == Kind::kLars ? "lars " : "lamb ") + dtype_name(gdt) +
                     " variant " + std::to_string(variant));
        Problem p = make(gdt, 5, 7 + variant);
        kernels::LarsArgs la = lars_args();
        kernels::LambArgs ma = lamb_args();
        if (variant == 1) la.sgd.weight_decay = ma.adam.weight_decay = 0;  // not adapted
        if (variant == 2) {
          la.trust_clip = ma.trust_clip = true;
          la.sgd.dampening = 0;
          la.sgd.nesterov = true;
          la.sgd.lr = 0.04;  // near the ratios (about 0.04): LARC's min(ratio / lr, 1) bites
        }
        if (variant == 3) la.sgd.clip_value = ma.adam.clip_value = 100.0f;
        const Tensor inv = Tensor::full({1}, 1.0 / 1024);
        std::vector<std::vector<double>> rp, r1, r2, rg;
        for (size_t i = 0; i < p.params.size(); ++i) {
          rp.push_back(f64(p.params[i]));
          r1.push_back(f64(p.s1[i]));
          r2.push_back(f64(p.s2[i]));
          rg.push_back(f64(p.grads[i]));  // the 16-bit values exactly
        }
        const double gs = 0.5 / 1024, clip = variant == 3 ? 100.0 : INFINITY;
        for (size_t i = 0; i < rp.size(); ++i) {
          if (kind == Kind::kLars) {
            lars_reference(rp[i], rg[i], r1[i], la, gs, clip);
          } else {
            lamb_reference(rp[i], rg[i], r1[i], r2[i], ma, gs, clip);
          }
        }
        const Problem before = clone(p);
        step(p, kind, la, ma, nullptr, inv);
        for (size_t i = 0; i < rp.size(); ++i) {
          SCOPED_TRACE("tensor " + std::to_string(i));
          // Steps of about lr in size; float rounding of the terms, relative to the step.
          EXPECT_LT(max_err(p.params[i], rp[i], 1e-2), 2e-6);
          EXPECT_LT(max_err(p.s1[i], r1[i], 1e-3), 1e-5);
          if (kind == Kind::kLamb) {
            EXPECT_LT(max_err(p.s2[i], r2[i], 1e-6), 1e-5);
          }
          EXPECT_FALSE(same(p.params[i], before.params[i])) << "the step changed nothing";
          if (!p.working.empty()) {
            EXPECT_TRUE(same(p.working[i], p.params[i].to(gdt)))
                << "the working copy is not the master rounded";
          }
        }
      }
    }
  }
}

// The trust ratio matters: LARS's steps differ in size between tensors as their ratios say
// (the same gradient on a small and a large tensor), and a LARS step without weight decay is
// an SGD step bit for bit.
TEST(OptimLayerwise, LarsScalesEachTensorByItsOwnRatio) {
  std::vector<Tensor> p = {Tensor::full({4}, 0.1), Tensor::full({4}, 10.0)};
  std::vector<Tensor> g = {Tensor::full({4}, 1.0), Tensor::full({4}, 1.0)};
  kernels::LarsArgs a;
  a.sgd.lr = 1.0;
  a.sgd.weight_decay = 1e-4;
  a.trust_coefficient = 0.001;
  lars_step_(p, g, {}, {}, a, nullptr);
  // ratio = 0.001 * |p| / (|g| + 1e-4 |p|): |p| = 0.2 and 20, |g| = 2.
  const double r0 = 0.001 * 0.2 / (2 + 1e-4 * 0.2 + 1e-8), r1 = 0.001 * 20 / (2 + 1e-4 * 20 + 1e-8);
  EXPECT_NEAR(p[0].to_double_vector()[0], 0.1 - r0 * (1 + 1e-4 * 0.1), 1e-8);
  EXPECT_NEAR(p[1].to_double_vector()[0], 10.0 - r1 * (1 + 1e-4 * 10), 1e-6);

  Problem x = make(DType::kFloat32, 4, 3), y = make(DType::kFloat32, 4, 3);
  kernels::LarsArgs la = lars_args();
  la.sgd.weight_decay = 0;
  const kernels::SgdArgs sa = la.sgd;
  lars_step_(x.params, x.grads, {}, x.s1, la, nullptr);
  sgd_step_(y.params, y.grads, {}, y.s1, sa);
  for (size_t i = 0; i < x.params.size(); ++i) EXPECT_TRUE(same(x.params[i], y.params[i])) << i;
}

// A flagged step (the AMP finite check) changes nothing: no weights, no momentum, no moments.
TEST(OptimLayerwise, SkipFlagChangesNothing) {
  for (Kind kind : {Kind::kLars, Kind::kLamb}) {
    Problem p = make(DType::kFloat16, 3, 5);
    const Problem before = clone(p);
    step(p, kind, lars_args(), lamb_args(), nullptr, Tensor(), Tensor::full({1}, 1.0));
    for (size_t i = 0; i < p.params.size(); ++i) {
      EXPECT_TRUE(same(p.params[i], before.params[i]));
      EXPECT_TRUE(same(p.s1[i], before.s1[i]));
      EXPECT_TRUE(same(p.s2[i], before.s2[i]));
      EXPECT_TRUE(same(p.working[i], before.working[i]));
    }
    step(p, kind, lars_args(), lamb_args(), nullptr, Tensor(), Tensor::full({1}, 0.0));
    EXPECT_FALSE(same(p.params[0], before.params[0]));
    EXPECT_FALSE(same(p.s1[0], before.s1[0]));
  }
}

double max_rel(const Tensor& a, const Tensor& b, double floor) {
  const auto x = f64(a), y = f64(b);
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i)
    e = std::max(e, std::abs(x[i] - y[i]) / (std::abs(y[i]) + floor));
  return e;
}

// CUDA against the CPU twin: 50 tensors (three launch groups), every gradient dtype, the
// device inv_scale, skip flag, step offset and {lr, step}, several steps.
TEST(OptimLayerwiseCuda, MatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  for (Kind kind : {Kind::kLars, Kind::kLamb}) {
    for (DType gdt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (int variant = 0; variant < 3; ++variant) {
        SCOPED_TRACE(std::string(kind == Kind::kLars ? "lars " : "lamb ") + dtype_name(gdt) +
                     " variant " + std::to_string(variant));
        Problem cpu = make(gdt, 50, 31 + variant);
        Problem dev = to(cpu, gpu);
        kernels::LarsArgs la = lars_args();
        kernels::LambArgs ma = lamb_args();
        if (variant == 1) la.sgd.weight_decay = ma.adam.weight_decay = 0;
        if (variant == 2) {
          la.trust_clip = ma.trust_clip = true;
          la.sgd.lr = 0.01;
          la.sgd.clip_value = ma.adam.clip_value = 100.0f;
        }
        const Tensor inv = Tensor::full({1}, 1.0 / 1024);
        const Tensor off = Tensor::from_vector(std::vector<int64_t>{1}, {1});
        const Tensor lr_step = Tensor::from_vector(std::vector<double>{0.3, 5.0}, {2});
        Tensor scratch;
        for (int s = 0; s < 3; ++s) {
          for (Problem* p : {&cpu, &dev}) {
            const Device d = p == &cpu ? Device::cpu() : gpu;
            const Tensor skip = Tensor::full({1}, s == 1 ? 1.0 : 0.0).to(d);
            if (s == 2) {  // rate and step from the device, less the offset
              step(*p, kind, la, ma, &scratch, inv.to(d), skip, off.to(d), lr_step.to(d));
            } else {
              step(*p, kind, la, ma, &scratch, inv.to(d), skip);
            }
          }
        }
        for (size_t i = 0; i < cpu.params.size(); ++i) {
          EXPECT_LT(max_rel(dev.params[i], cpu.params[i], 1e-2), 1e-5) << i;
          EXPECT_LT(max_rel(dev.s1[i], cpu.s1[i], 1e-3), 1e-5) << i;
          if (kind == Kind::kLamb) {
            EXPECT_LT(max_rel(dev.s2[i], cpu.s2[i], 1e-6), 1e-5) << i;
          }
          if (!cpu.working.empty()) {
            EXPECT_TRUE(same(dev.working[i], dev.params[i].to(Device::cpu()).to(gdt))) << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace mlai::tensor
