// Training-step throughput of the mlp model (784-128-256-10, as mlai_train --arch mlp): one
// step is forward, cross-entropy, backward, optimizer step and zero_grad on synthetic data
// already in memory, so no data loading is timed. Cpu* run on the CPU (OpenBLAS GEMMs, with
// blas_threads threads), Cuda* on cuda:0 (they end in "no CUDA device" where there is none).
// bench/reference_mlp.py times the same steps in PyTorch; bench/results/ has comparisons.
//   build/bench/mlai_bench_train --benchmark_filter=Cpu --benchmark_repetitions=3
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "tensor/ops.h"

namespace mlai::bench {
namespace {

using autograd::Variable;
using tensor::Device;
using tensor::Generator;
using tensor::Tensor;
using Clock = std::chrono::steady_clock;

constexpr int64_t kClasses = 10;
constexpr int64_t kValidationBatch = 32;
constexpr int kValidationSteps = 20;
constexpr int kWarmupSteps = 5;

// A model, its optimizer and one fixed batch on one device.
struct Trainee {
  std::shared_ptr<nn::Module> model;
  std::unique_ptr<nn::Optimizer> opt;
  Tensor images, labels;
};

// The timed settings are PyTorch's usual ones: Adam lr 1e-3, SGD lr 0.01 with momentum 0.9.
double default_lr(const std::string& optimizer) { return optimizer == "sgd" ? 0.01 : 1e-3; }

Trainee make_trainee(const std::string& optimizer, double lr, int64_t batch, const Device& dev,
                     uint64_t seed) {
  nn::ModelSpec spec;  // 28x28x1 input, 10 classes, default widths 128, 256
  spec.seed = seed;
  Trainee t;
  t.model = nn::make_model("mlp", spec);
  t.model->to(dev);
  nn::OptimizerConfig oc;
  oc.name = optimizer;
  oc.lr = lr;
  oc.momentum = optimizer == "sgd" ? 0.9 : 0.0;
  t.opt = nn::make_optimizer(t.model->named_parameters(), oc);
  Generator gen(seed + 1);
  t.images = Tensor::uniform({batch, spec.channels, spec.height, spec.width}, 0, 1, gen,
                             tensor::DType::kFloat32, dev);
  t.labels = random_labels(batch, kClasses, gen, dev);
  return t;
}

// Seconds spent in each phase of the steps so far (host clock: exact on the CPU, where every op
// is synchronous; on a GPU only the launch time, so Cuda* do not report them).
struct Phases {
  double forward = 0, backward = 0, optimizer = 0;
};

// One training step, as nn::Trainer does it; returns the loss (before the update).
Tensor train_step(Trainee& t, Phases* phases = nullptr) {
  const auto t0 = Clock::now();
  Variable logits = (*t.model)(Variable(t.images));
  Variable loss = autograd::cross_entropy(logits, t.labels);
  const auto t1 = Clock::now();
  loss.backward();
  const auto t2 = Clock::now();
  t.opt->step();
  t.opt->zero_grad();
  if (phases) {
    auto s = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double>(b - a).count();
    };
    phases->forward += s(t0, t1);
    phases->backward += s(t1, t2);
    phases->optimizer += s(t2, Clock::now());
  }
  return loss.data();
}

// Mean cross-entropy of the model on (images, labels), in float64 on the host: Linear layers
// (named parameters in weight, bias pairs) with a relu between them.
double reference_loss(const nn::Module& model, const Tensor& images, const Tensor& labels) {
  const auto params = model.named_parameters();
  const int64_t batch = images.size(0);
  std::vector<double> h = images.to_double_vector();
  int64_t width = images.numel() / batch;
  for (size_t l = 0; l + 1 < params.size(); l += 2) {
    const std::vector<double> w = params[l].second.data().to_double_vector();
    const std::vector<double> b = params[l + 1].second.data().to_double_vector();
    const int64_t out = params[l].second.size(0);
    const bool last = l + 2 >= params.size();
    std::vector<double> next(static_cast<size_t>(batch * out));
    for (int64_t r = 0; r < batch; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        double acc = b[static_cast<size_t>(o)];
        for (int64_t i = 0; i < width; ++i)
          acc += h[static_cast<size_t>(r * width + i)] * w[static_cast<size_t>(o * width + i)];
        next[static_cast<size_t>(r * out + o)] = last ? acc : std::max(acc, 0.0);
      }
    }
    h = std::move(next);
    width = out;
  }
  const std::vector<int64_t> y = labels.to(Device::cpu()).to_vector<int64_t>();
  double total = 0;
  for (int64_t r = 0; r < batch; ++r) {
    const double* row = h.data() + r * width;
    double mx = row[0], se = 0;
    for (int64_t c = 1; c < width; ++c) mx = std::max(mx, row[c]);
    for (int64_t c = 0; c < width; ++c) se += std::exp(row[c] - mx);
    total += mx + std::log(se) - row[y[static_cast<size_t>(r)]];
  }
  return total / static_cast<double>(batch);
}

// Checks, on a small fixed batch, that a step is a training step: the first loss matches a
// float64 forward of the same weights, zero_grad leaves zero gradients, and kValidationSteps
// steps bring the loss well down (the batch is memorised). SGD runs with 10x the timed learning
// rate here (the same code path), since lr 0.01 takes far more than 20 steps to memorise.
// "" when all hold.
std::string validate_training(const std::string& optimizer, const Device& dev) {
  const double lr = default_lr(optimizer) * (optimizer == "sgd" ? 10 : 1);
  Trainee t = make_trainee(optimizer, lr, kValidationBatch, dev, 7);
  const double ref = reference_loss(*t.model, t.images, t.labels);
  std::vector<double> losses;
  for (int i = 0; i < kValidationSteps; ++i) losses.push_back(train_step(t).item());
  char msg[200];
  if (std::abs(losses[0] - ref) > 1e-4 * std::abs(ref)) {
    std::snprintf(msg, sizeof(msg), "first loss %.6f, float64 reference %.6f", losses[0], ref);
    return msg;
  }
  for (const auto& [name, v] : t.model->named_parameters()) {
    if (!v.grad().defined()) return "parameter " + name + " got no gradient";
    for (double g : v.grad().to_double_vector())
      if (g != 0) return "gradient of " + name + " not zero after zero_grad";
  }
  // Measured on the CPU: 2.31 -> 0.46 (adam) and 0.04 (sgd); a step that does not learn stays
  // near ln(10) = 2.30.
  const double last = losses.back();
  if (!std::isfinite(last) || last > 0.5 * losses[0]) {
    std::snprintf(msg, sizeof(msg), "loss %.4f -> %.4f after %d steps (expected < half)", losses[0],
                  last, kValidationSteps);
    return msg;
  }
  return "";
}

// flops of one step: forward 2*B*in*out per layer; backward the same for every dW, and again
// for every dX except the first layer's (the images need no gradient).
double step_flops(const nn::Module& model, int64_t batch) {
  double fwd = 0, first = 0;
  for (const auto& [name, v] : model.named_parameters()) {
    if (v.shape().size() != 2) continue;
    const double f = 2.0 * static_cast<double>(batch * v.numel());
    if (first == 0) first = f;
    fwd += f;
  }
  return 3 * fwd - first;
}

void train_bench(benchmark::State& state, const std::string& optimizer, int64_t batch,
                 const Device& dev) {
  if (dev.is_cuda() && !require_cuda(state)) return;
  // Validated once per optimizer and device: the batch size does not change what is checked.
  if (!validate_once(state, "TrainStep/mlp/" + optimizer + "/" + dev.str(),
                     [&] { return validate_training(optimizer, dev); }))
    return;
  Trainee t = make_trainee(optimizer, default_lr(optimizer), batch, dev, 1);
  const tensor::Stream stream = tensor::current_stream(dev);
  for (int i = 0; i < kWarmupSteps; ++i) train_step(t);  // allocator cache, optimizer state
  stream.synchronize();
  Phases phases;
  double total = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    train_step(t, dev.is_cpu() ? &phases : nullptr);
    stream.synchronize();  // a GPU step counts until its last kernel ends
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    state.SetIterationTime(s);
    total += s;
  }
  const double n = static_cast<double>(state.iterations());
  if (n == 0) return;
  state.counters["images_per_sec"] =
      benchmark::Counter(n * static_cast<double>(batch), benchmark::Counter::kIsRate);
  state.counters["batch"] = static_cast<double>(batch);
  set_rate(state, "GFLOPS", step_flops(*t.model, batch) * 1e-9, total / n,
           dev.is_cuda() ? cuda_peak(0).fp32_tflops * 1e3 : 0.0);
  if (dev.is_cpu()) {
    state.counters["blas_threads"] = openblas_get_num_threads();
    state.counters["fwd_ms"] = phases.forward / n * 1e3;
    state.counters["bwd_ms"] = phases.backward / n * 1e3;
    state.counters["opt_ms"] = phases.optimizer / n * 1e3;  // step and zero_grad
  }
}

void register_train_benchmarks() {
  // Shown in the header of every run: which OpenBLAS, on which core type, with how many threads.
  benchmark::AddCustomContext("openblas", openblas_get_config());
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_get_num_threads()));
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype ? coretype : "(unset)");
  for (const Device& dev : {Device::cpu(), Device::cuda(0)}) {
    for (const std::string& optimizer : {std::string("adam"), std::string("sgd")}) {
      for (int64_t batch : {64, 256}) {
        const std::string name = std::string(dev.is_cpu() ? "CpuTrainStep" : "CudaTrainStep") +
                                 "/mlp/" + optimizer + "/batch:" + std::to_string(batch);
        benchmark::RegisterBenchmark(
            name.c_str(), [=](benchmark::State& st) { train_bench(st, optimizer, batch, dev); })
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

[[maybe_unused]] const bool kRegistered = (register_train_benchmarks(), true);

}  // namespace
}  // namespace mlai::bench
