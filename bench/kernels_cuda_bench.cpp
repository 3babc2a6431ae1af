// CUDA benchmarks of the tensor ops on cuda:0, timed with CUDA events (manual time) and
// reported as TFLOPS or GBps next to the card's peak (peak_*, pct_peak). Each op is checked
// against a float64 reference on the host first. Without a GPU every one of them ends in
// "no CUDA device" instead of running. Names are Cuda<Op>/<dtype>/<size> (GEMM: MxNxK).
//   build/bench/mlai_bench_kernels --benchmark_filter=Cuda --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "bench/reference.h"
#include "kernels/gemm.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::bench {
namespace {

using tensor::Device;
using tensor::DType;
using tensor::Generator;
using tensor::Tensor;

const Device kGpu = Device::cuda(0);

// What one call of an op must do at least: bytes through device memory, or flops.
struct Work {
  double bytes = 0;
  double flops = 0;
  bool tensor_cores = false;  // flops run at the fp16/bf16 tensor-core peak
  double peak_share = 1.0;    // of that peak: TF32 runs at half the fp16 rate (A100, H100, H200)
};

// Times op(i) and sets the rate counters. Small ops are repeated between the two events so that
// one timed interval lasts about a millisecond.
void time_and_report(benchmark::State& state, const Work& w, const std::function<void(int)>& op) {
  const DevicePeak& peak = cuda_peak(0);
  const double bw = (peak.hbm_gbps > 0 ? peak.hbm_gbps : 2000.0) * 1e9;
  const double fl =
      (w.tensor_cores ? std::max(peak.tensor_tflops, 300.0) : std::max(peak.fp32_tflops, 20.0)) *
      1e12;
  const double estimate = std::max({w.bytes / bw, w.flops / fl, 1e-7});
  const int reps = std::clamp(static_cast<int>(1e-3 / estimate), 1, 200);
  const double seconds = time_cuda(state, reps, op);
  if (w.flops > 0) {
    set_rate(state, "TFLOPS", w.flops * 1e-12, seconds,
             w.tensor_cores ? peak.tensor_tflops * w.peak_share : peak.fp32_tflops);
  } else {
    set_rate(state, "GBps", w.bytes * 1e-9, seconds, peak.hbm_gbps);
  }
}

// Enough copies of an input that cycling through them does not stay in the 50 MB L2 cache.
int input_sets(double bytes_per_set) {
  return std::clamp(static_cast<int>(256e6 / bytes_per_set), 1, 16);
}

// tf32: float32 data under --float32-matmul-precision high (TF32 tensor cores).
void cuda_gemm(benchmark::State& state, const std::string& key, DType dt, int64_t m, int64_t n,
               int64_t k, bool tf32 = false) {
  if (!require_cuda(state)) return;
  struct Precision {  // the process-wide setting, for this benchmark only
    explicit Precision(bool on) {
      kernels::set_float32_matmul_precision(on ? kernels::MatmulPrecision::kHigh
                                               : kernels::MatmulPrecision::kHighest);
    }
    ~Precision() { kernels::set_float32_matmul_precision(kernels::MatmulPrecision::kHighest); }
  } precision(tf32);
  Generator gen(11);
  const Tensor a = Tensor::uniform({m, k}, -1, 1, gen, dt, kGpu);
  const Tensor b = Tensor::uniform({k, n}, -1, 1, gen, dt, kGpu);
  // Plain fp32 GEMM promises no TF32 (kernels/gemm.h): TF32 would show as an error near 5e-4.
  const double tol = dt == DType::kFloat32 ? (tf32 ? 5e-3 : 1e-4) : default_tol(dt);
  if (!validate_once(state, key, [&] { return check_gemm(a, b, tensor::matmul(a, b), tol); }))
    return;
  Tensor c;
  const Work w{0, 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k),
               dt != DType::kFloat32 || tf32, tf32 ? 0.5 : 1.0};
  time_and_report(state, w, [&](int) { c = tensor::matmul(a, b); });
}

enum class Op { kAdd, kRelu, kSum, kCast };

void cuda_memory_bound(benchmark::State& state, const std::string& key, Op op, DType dt,
                       int64_t n) {
  if (!require_cuda(state)) return;
  Generator gen(12);
  const Tensor a = Tensor::uniform({n}, -1, 1, gen, dt, kGpu);
  const Tensor b = op == Op::kAdd ? Tensor::uniform({n}, -1, 1, gen, dt, kGpu) : Tensor();
  auto run = [&]() -> Tensor {
    switch (op) {
      case Op::kAdd:
        return tensor::add(a, b);
      case Op::kRelu:
        return tensor::relu(a);
      case Op::kSum:
        return tensor::sum(a);
      case Op::kCast:
        return tensor::cast(a, DType::kFloat16);
    }
    return {};
  };
  if (!validate_once(state, key, [&] {
        const Tensor out = run();
        if (op == Op::kSum) return check_sum(a, out, 1e-5);
        if (op == Op::kCast) return check_cast(a, out);
        return check_elementwise(a, b, out, default_tol(dt));
      }))
    return;
  const double es = static_cast<double>(tensor::dtype_size(dt)), count = static_cast<double>(n);
  double bytes = count * es;  // sum reads x once
  if (op == Op::kAdd) bytes = 3 * count * es;
  if (op == Op::kRelu) bytes = 2 * count * es;
  if (op == Op::kCast) bytes = count * (es + 2);
  Tensor out;
  time_and_report(state, Work{bytes, 0, false}, [&](int) { out = run(); });
}

void cuda_xent(benchmark::State& state, const std::string& key, bool backward, DType dt,
               int64_t rows, int64_t classes) {
  if (!require_cuda(state)) return;
  Generator gen(13);
  const double x_bytes =
      static_cast<double>(rows * classes) * static_cast<double>(tensor::dtype_size(dt));
  const int sets = input_sets(x_bytes);
  std::vector<Tensor> logits, labels, lse;
  for (int i = 0; i < sets; ++i) {
    logits.push_back(Tensor::uniform({rows, classes}, -4, 4, gen, dt, kGpu));
    labels.push_back(random_labels(rows, classes, gen, kGpu));
    lse.push_back(tensor::softmax_xent_forward(logits.back(), labels.back(), 0.0).second);
  }
  // fp16/bf16 gradients get an AMP-sized upstream gradient (the loss scale, 2^16), as in
  // training: with 1 most fp16 dlogits (about 1e-7 at 4096 rows) would be subnormal.
  const double upstream = dt == DType::kFloat32 ? 1.0 : 65536.0;
  const Tensor dloss = Tensor::full({}, upstream, DType::kFloat32, kGpu);
  const double scale = 1.0 / static_cast<double>(rows);
  auto run = [&](int i) -> Tensor {
    const size_t s = static_cast<size_t>(i % sets);
    if (backward)
      return tensor::softmax_xent_backward(logits[s], labels[s], lse[s], dloss, scale, 0.0);
    return tensor::softmax_xent_forward(logits[s], labels[s], 0.0).first;
  };
  if (!validate_once(state, key, [&] {
        // The loss is fp32 whatever the logits; dlogits are rounded to the logits' dtype.
        return backward ? check_xent_backward(logits[0], labels[0], upstream * scale, run(0),
                                              default_tol(dt))
                        : check_xent_forward(logits[0], labels[0], run(0), 1e-5);
      }))
    return;
  const double bytes = backward ? 2 * x_bytes + static_cast<double>(rows * 12)
                                : x_bytes + static_cast<double>(rows * 16);
  Tensor out;
  time_and_report(state, Work{bytes, 0, false}, [&](int i) { out = run(i); });
}

// CudaAutoAugment/<policy>/BxHxWxC: --auto-augment's kernel, images/s, checked against its
// CPU twin byte for byte.
void cuda_auto_augment(benchmark::State& state, const std::string& key,
                       kernels::AutoAugmentPolicy policy, int64_t batch, int64_t hw, int64_t c) {
  if (!require_cuda(state)) return;
  Tensor px, ids;
  const kernels::AutoAugmentParams p = auto_augment_batch(policy, batch, hw, c, &px, &ids);
  const Tensor gpx = px.to(kGpu), gids = ids.to(kGpu);
  Tensor out;
  if (!validate_once(state, key, [&] {
        return tensor::auto_augment(gpx, gids, p).to_vector<uint8_t>() ==
                       tensor::auto_augment(px, ids, p).to_vector<uint8_t>()
                   ? std::string()
                   : std::string("differs from the CPU twin");
      }))
    return;
  const double s = time_cuda(state, 20, [&](int) { out = tensor::auto_augment(gpx, gids, p); });
  set_rate(state, "Mimg_per_s", static_cast<double>(batch) * 1e-6, s, 0);
}

benchmark::internal::Benchmark* add_cuda(
    const std::string& name, std::function<void(benchmark::State&, const std::string&)> fn) {
  return benchmark::RegisterBenchmark(name.c_str(),
                                      [name, fn](benchmark::State& state) { fn(state, name); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

void register_cuda_benchmarks() {
  const DType kFloats[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  for (DType dt : kFloats) {
    for (int64_t s : {4096, 8192}) {
      const std::string size =
          std::to_string(s) + "x" + std::to_string(s) + "x" + std::to_string(s);
      add_cuda("CudaGemm/" + short_dtype(dt) + "/" + size, [=](benchmark::State& st,
                                                               const std::string& key) {
        cuda_gemm(st, key, dt, s, s, s);
      })->Unit(benchmark::kMillisecond);
    }
  }
  for (int64_t s : {4096, 8192}) {  // beside torch.matmul with allow_tf32 (gpu-check's fp32_tf32)
    const std::string size = std::to_string(s) + "x" + std::to_string(s) + "x" + std::to_string(s);
    add_cuda("CudaGemm/fp32_tf32/" + size, [=](benchmark::State& st, const std::string& key) {
      cuda_gemm(st, key, DType::kFloat32, s, s, s, /*tf32=*/true);
    })->Unit(benchmark::kMillisecond);
  }
  for (auto [policy, name] : auto_augment_policies())
    add_cuda("CudaAutoAugment/" + name + "/256x32x32x3",
             [policy](benchmark::State& st, const std::string& key) {
               cuda_auto_augment(st, key, policy, 256, 32, 3);
             });
  const int64_t n = int64_t{64} << 20;
  const std::pair<Op, const char*> kOps[] = {
      {Op::kAdd, "CudaAdd"}, {Op::kRelu, "CudaRelu"}, {Op::kSum, "CudaSum"}};
  for (auto [op, op_name] : kOps) {
    for (DType dt : {DType::kFloat32, DType::kFloat16}) {
      add_cuda(std::string(op_name) + "/" + short_dtype(dt) + "/" + count_label(n),
               [=](benchmark::State& st, const std::string& key) {
                 cuda_memory_bound(st, key, op, dt, n);
               });
    }
  }
  add_cuda("CudaCast/fp32_to_fp16/" + count_label(n),
           [=](benchmark::State& st, const std::string& key) {
             cuda_memory_bound(st, key, Op::kCast, DType::kFloat32, n);
           });
  for (auto [rows, classes] : {std::pair<int64_t, int64_t>{256, 10}, {4096, 1000}}) {
    const std::string size = std::to_string(rows) + "x" + std::to_string(classes);
    for (DType dt : {DType::kFloat32, DType::kFloat16}) {
      for (bool bwd : {false, true}) {
        add_cuda(std::string(bwd ? "CudaSoftmaxXentBwd/" : "CudaSoftmaxXentFwd/") +
                     short_dtype(dt) + "/" + size,
                 [=](benchmark::State& st, const std::string& key) {
                   cuda_xent(st, key, bwd, dt, rows, classes);
                 });
      }
    }
  }
}

[[maybe_unused]] const bool kRegistered = (register_cuda_benchmarks(), true);

}  // namespace
}  // namespace mlai::bench
