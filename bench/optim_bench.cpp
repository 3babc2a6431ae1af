// The fused optimizer steps over a whole model's parameters (resnet18_cifar's 62 tensors,
// 11.2 M values; the main job's mlp, 6 tensors, 136 K values), as the trainer calls them:
// {Cpu,Cuda}OptimStep/<sgd|adam|lars|lamb>/<grads>/<resnet18_cifar|mlp>, with float32 gradients
// (--precision 32) or fp16 gradients and working copies
// (--precision 16). Counters: Mparams_per_s and GBps, the bytes each step must move at least
// (SGD with momentum reads p, g, buf and writes p, buf; Adam p, g, m, v and p, m, v; LARS adds
// a read of p and g for the norms; LAMB reads m, v, p again for its second pass; fp16 adds
// the working copy's write and halves the gradient's read), against the memory's peak on a
// GPU. Before timing, each CPU step is checked against the same step taken one tensor at a
// time (the multi-tensor bookkeeping), each CUDA step against the CPU twin.
//   build/bench/mlai_bench_kernels --benchmark_filter=OptimStep
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "nn/models.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::bench {
namespace {

using tensor::Device;
using tensor::DType;
using tensor::Generator;
using tensor::Tensor;

enum class Opt { kSgd, kAdam, kLars, kLamb };
const char* opt_name(Opt o) {
  switch (o) {
    case Opt::kSgd:
      return "sgd";
    case Opt::kAdam:
      return "adam";
    case Opt::kLars:
      return "lars";
    case Opt::kLamb:
      return "lamb";
  }
  return "";
}

struct Params {
  std::vector<Tensor> p, g, w, s1, s2;
  Tensor scratch;
  int64_t numel = 0;
};

// The parameter shapes of `arch` (resnet18_cifar on 32x32x3, mlp on 28x28x1) with random
// values: masters and state in float32, gradients in `gdt` (with working copies when it is
// 16-bit).
Params make_params(const std::string& arch, DType gdt, const Device& dev) {
  nn::ModelSpec spec;
  const bool mlp = arch == "mlp";
  spec.height = spec.width = mlp ? 28 : 32;
  spec.channels = mlp ? 1 : 3;
  auto model = nn::make_model(arch, spec);
  Params ps;
  Generator gen(5);
  for (auto& [name, v] : model->named_parameters()) {
    const auto shape = v.shape();
    ps.p.push_back(Tensor::uniform(shape, -0.1, 0.1, gen).to(dev));
    ps.g.push_back(Tensor::uniform(shape, -0.01, 0.01, gen).to(gdt).to(dev));
    if (gdt != DType::kFloat32) ps.w.push_back(ps.p.back().to(gdt));
    ps.s1.push_back(Tensor::uniform(shape, -0.01, 0.01, gen).to(dev));
    ps.s2.push_back(Tensor::uniform(shape, 0, 1e-4, gen).to(dev));
    ps.numel += ps.p.back().numel();
  }
  return ps;
}

// One step of `o` over tensors [begin, end) of ps (all of them by default).
void step(Opt o, Params& ps, size_t begin = 0, size_t end = SIZE_MAX) {
  end = std::min(end, ps.p.size());
  auto sub = [&](const std::vector<Tensor>& v) {
    return v.empty() ? v
                     : std::vector<Tensor>(v.begin() + static_cast<long>(begin),
                                           v.begin() + static_cast<long>(end));
  };
  const auto p = sub(ps.p), g = sub(ps.g), w = sub(ps.w), s1 = sub(ps.s1), s2 = sub(ps.s2);
  kernels::SgdArgs sgd;  // LARS's too, at its own rate
  sgd.lr = 0.1;
  sgd.momentum = 0.9;
  sgd.weight_decay = 5e-4;
  sgd.step = 2;
  kernels::AdamArgs adam;  // LAMB's too
  adam.weight_decay = 0.01;
  adam.decoupled = true;
  adam.step = 2;
  switch (o) {
    case Opt::kSgd:
      tensor::sgd_step_(p, g, w, s1, sgd);
      break;
    case Opt::kAdam:
      tensor::adam_step_(p, g, w, s1, s2, adam);
      break;
    case Opt::kLars: {
      kernels::LarsArgs a;
      a.sgd = sgd;
      a.sgd.lr = 1.0;
      tensor::lars_step_(p, g, w, s1, a, &ps.scratch);
      break;
    }
    case Opt::kLamb: {
      kernels::LambArgs a;
      a.adam = adam;
      tensor::lamb_step_(p, g, w, s1, s2, a, &ps.scratch);
      break;
    }
  }
}

// Bytes per parameter a step moves at least (see the file comment).
double bytes_per_param(Opt o, DType gdt) {
  const double g = gdt == DType::kFloat32 ? 4 : 2, w = gdt == DType::kFloat32 ? 0 : 2;
  switch (o) {
    case Opt::kSgd:
      return 4 * 4 + g + w;
    case Opt::kAdam:
      return 6 * 4 + g + w;
    case Opt::kLars:
      return 4 * 4 + g + w + 4 + g;
    case Opt::kLamb:
      return 6 * 4 + g + w + 3 * 4;
  }
  return 0;
}

double max_rel(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto x = a[i].to(Device::cpu()).to_double_vector();
    const auto y = b[i].to(Device::cpu()).to_double_vector();
    for (size_t k = 0; k < x.size(); ++k)
      e = std::max(e, std::abs(x[k] - y[k]) / (std::abs(y[k]) + 1e-3));
  }
  return e;
}

void cpu_optim(benchmark::State& state, const std::string& key, const std::string& arch, Opt o,
               DType gdt) {
  Params ps = make_params(arch, gdt, Device::cpu());
  if (!validate_once(state, key, [&] {
        Params whole = make_params(arch, gdt, Device::cpu()),
               each = make_params(arch, gdt, Device::cpu());
        step(o, whole);
        for (size_t t = 0; t < each.p.size(); ++t) step(o, each, t, t + 1);
        if (max_rel(whole.p, each.p) != 0 || max_rel(whole.s1, each.s1) != 0)
          return std::string("the multi-tensor step differs from steps one tensor at a time");
        if (max_rel(whole.p, make_params(arch, gdt, Device::cpu()).p) == 0)
          return std::string("the step changed nothing");
        return std::string();
      }))
    return;
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    step(o, ps);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    total += s;
  }
  const double s = state.iterations() > 0 ? total / static_cast<double>(state.iterations()) : 0;
  set_rate(state, "Mparams_per_s", static_cast<double>(ps.numel) * 1e-6, s, 0);
  set_rate(state, "GBps", static_cast<double>(ps.numel) * bytes_per_param(o, gdt) * 1e-9, s, 0);
}

void cuda_optim(benchmark::State& state, const std::string& key, const std::string& arch, Opt o,
                DType gdt) {
  if (!require_cuda(state)) return;
  const Device gpu = Device::cuda(0);
  Params ps = make_params(arch, gdt, gpu);
  if (!validate_once(state, key, [&] {
        Params dev = make_params(arch, gdt, gpu), cpu = make_params(arch, gdt, Device::cpu());
        step(o, dev);
        step(o, cpu);
        const double e = std::max(max_rel(dev.p, cpu.p), max_rel(dev.s1, cpu.s1));
        return e < 1e-5 ? std::string()
                        : "differs from the CPU twin by " + std::to_string(e) + " (relative)";
      }))
    return;
  const double s = time_cuda(state, 10, [&](int) { step(o, ps); });
  set_rate(state, "Mparams_per_s", static_cast<double>(ps.numel) * 1e-6, s, 0);
  set_rate(state, "GBps", static_cast<double>(ps.numel) * bytes_per_param(o, gdt) * 1e-9, s,
           cuda_peak().hbm_gbps);
}

void register_optim_benchmarks() {
  for (const std::string arch : {"resnet18_cifar", "mlp"}) {
    for (Opt o : {Opt::kSgd, Opt::kAdam, Opt::kLars, Opt::kLamb}) {
      for (DType gdt : {DType::kFloat32, DType::kFloat16}) {
        const std::string tail = std::string(opt_name(o)) + "/" + short_dtype(gdt) + "/" + arch;
        benchmark::RegisterBenchmark(
            ("CpuOptimStep/" + tail).c_str(),
            [=](benchmark::State& st) { cpu_optim(st, "CpuOptimStep/" + tail, arch, o, gdt); })
            ->MinTime(0.1)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(
            ("CudaOptimStep/" + tail).c_str(),
            [=](benchmark::State& st) { cuda_optim(st, "CudaOptimStep/" + tail, arch, o, gdt); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

[[maybe_unused]] const bool kRegistered = (register_optim_benchmarks(), true);

}  // namespace
}  // namespace mlai::bench
