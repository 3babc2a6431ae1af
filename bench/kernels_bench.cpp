// CPU benchmarks of the tensor ops (the CPU backend, which is also the reference of every CUDA
// kernel); the CUDA ones are in kernels_cuda_bench.cpp. Each op is checked against a float64
// reference before it is timed. Names are Cpu<Op>/<dtype>/<size> (GEMM sizes are MxNxK);
// CpuHalf/<to_fp16|to_fp32|sum>/<f16c|portable>/N times kernels/half_convert.h on one core
// (the casts, --ddp-comm-hook's packing and the MPI sum of fp16 buckets) on each path;
// CpuConvDepthwise/<pass>/<depthwise|im2col>/NxHxWxC times one pass of a depthwise 3x3
// convolution (mobilenet_v2_cifar's layers) with the depthwise kernel or im2col's grouped GEMMs.
// CpuBatchNorm/<fwd|bwd>/NxHxWxC times training batch norm (statistics, normalisation,
// running statistics; backward: dx, dgamma, dbeta) at mobilenet_v2_cifar's widest layers,
// checked against the same op in float64.
// CpuConv3x3/<pass>/<im2col|winograd>/NxHxWxC times one pass of a 3x3 stride-1 convolution
// (resnet18_cifar's four stages at batch 32) with each CPU algorithm, checked against the
// other; its GFLOPS count the direct convolution's multiply-adds for both, so their ratio is
// the speed-up.
//   build/bench/mlai_bench_kernels --benchmark_filter=Cpu
//   build/bench/mlai_bench_kernels --benchmark_out=cpu.json --benchmark_out_format=json
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bench/bench_util.h"
#include "bench/reference.h"
#include "kernels/auto_augment.h"
#include "kernels/common.h"
#include "kernels/conv.h"
#include "kernels/half_convert.h"
#include "tensor/fused_ops.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::bench {
namespace {

using tensor::DType;
using tensor::Generator;
using tensor::Tensor;

constexpr double kMinTime = 0.1;  // seconds per benchmark: the whole CPU set takes a few seconds

// Times op() with the host clock (the CPU ops are synchronous; OpenBLAS's threads included)
// and returns the mean seconds per call.
template <class Op>
double time_cpu(benchmark::State& state, Op op) {
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    Tensor out = op();
    benchmark::DoNotOptimize(out.data_ptr());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(s);
    total += s;
  }
  return state.iterations() > 0 ? total / static_cast<double>(state.iterations()) : 0.0;
}

void cpu_gemm(benchmark::State& state, const std::string& key, int64_t m, int64_t n, int64_t k) {
  Generator gen(1);
  const Tensor a = Tensor::uniform({m, k}, -1, 1, gen);
  const Tensor b = Tensor::uniform({k, n}, -1, 1, gen);
  if (!validate_once(state, key, [&] {
        return check_gemm(a, b, tensor::matmul(a, b), default_tol(DType::kFloat32));
      }))
    return;
  const double s = time_cpu(state, [&] { return tensor::matmul(a, b); });
  set_rate(state, "GFLOPS", 2.0 * static_cast<double>(m * n * k) * 1e-9, s, 0);
}

// The reference for cpu_gemm in the same process: the whole product as one OpenBLAS call on
// one thread (what mlai's gemm ran before it split deep products along their depth).
void cpu_gemm_one_call(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  Generator gen(1);
  const Tensor a = Tensor::uniform({m, k}, -1, 1, gen);
  const Tensor b = Tensor::uniform({k, n}, -1, 1, gen);
  const double s = time_cpu(state, [&] {
    Tensor c = Tensor::empty({m, n});
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, a.data<float>(),
                static_cast<int>(k), b.data<float>(), static_cast<int>(n), 0.0f,
                c.data<float>(), static_cast<int>(n));
    return c;
  });
  set_rate(state, "GFLOPS", 2.0 * static_cast<double>(m * n * k) * 1e-9, s, 0);
}

void cpu_elementwise(benchmark::State& state, const std::string& key, bool is_add, int64_t n) {
  Generator gen(2);
  const Tensor a = Tensor::uniform({n}, -1, 1, gen);
  const Tensor b = is_add ? Tensor::uniform({n}, -1, 1, gen) : Tensor();
  auto op = [&] { return is_add ? tensor::add(a, b) : tensor::relu(a); };
  if (!validate_once(state, key,
                     [&] { return check_elementwise(a, b, op(), default_tol(DType::kFloat32)); }))
    return;
  const double s = time_cpu(state, op);
  set_rate(state, "GBps", static_cast<double>((is_add ? 3 : 2) * n * 4) * 1e-9, s, 0);
}

void cpu_sum(benchmark::State& state, const std::string& key, int64_t n) {
  Generator gen(3);
  const Tensor x = Tensor::uniform({n}, -1, 1, gen);
  if (!validate_once(state, key, [&] { return check_sum(x, tensor::sum(x), 1e-5); })) return;
  const double s = time_cpu(state, [&] { return tensor::sum(x); });
  set_rate(state, "GBps", static_cast<double>(n * 4) * 1e-9, s, 0);
}

void cpu_xent(benchmark::State& state, const std::string& key, bool backward, int64_t rows,
              int64_t classes) {
  Generator gen(4);
  const Tensor logits = Tensor::uniform({rows, classes}, -4, 4, gen);
  const Tensor labels = random_labels(rows, classes, gen);
  const Tensor dloss = Tensor::full({}, 1.0);
  const double scale = 1.0 / static_cast<double>(rows);
  const Tensor lse = tensor::softmax_xent_forward(logits, labels, 0.0).second;
  if (!validate_once(state, key, [&] {
        return backward ? check_xent_backward(
                              logits, labels, scale,
                              tensor::softmax_xent_backward(logits, labels, lse, dloss, scale, 0.0),
                              1e-5)
                        : check_xent_forward(
                              logits, labels,
                              tensor::softmax_xent_forward(logits, labels, 0.0).first, 1e-5);
      }))
    return;
  const double s = time_cpu(state, [&] {
    return backward ? tensor::softmax_xent_backward(logits, labels, lse, dloss, scale, 0.0)
                    : tensor::softmax_xent_forward(logits, labels, 0.0).first;
  });
  // Forward reads logits and labels and writes two floats a row; backward also reads the
  // log-sum-exps and writes dlogits.
  const double x_bytes = static_cast<double>(rows * classes * 4);
  const double bytes = backward ? 2 * x_bytes + static_cast<double>(rows * 12)
                                : x_bytes + static_cast<double>(rows * 16);
  set_rate(state, "GBps", bytes * 1e-9, s, 0);
}

// One pass of a float convolution (0 forward, 1 backward data, 2 backward filter) with `algo`,
// into a new tensor.
Tensor conv_pass(int pass, const Tensor& x, const Tensor& w, const Tensor& dy,
                 const kernels::Conv2dGeometry& g, kernels::ConvAlgo algo) {
  Tensor out = Tensor::empty(pass == 0 ? dy.shape() : pass == 1 ? x.shape() : w.shape());
  float* o = out.data<float>();
  if (pass == 0)
    kernels::cpu::conv2d_forward(x.data<float>(), w.data<float>(),
                                 static_cast<const float*>(nullptr), o, g, algo);
  else if (pass == 1)
    kernels::cpu::conv2d_backward_data(dy.data<float>(), w.data<float>(), o, g, algo);
  else
    kernels::cpu::conv2d_backward_filter(x.data<float>(), dy.data<float>(), o,
                                         static_cast<float*>(nullptr), g, algo);
  return out;
}

// "" when a and b (two algorithms' results for one pass) agree to 1e-5 of b's largest value,
// else the error found.
std::string agree_to_float(const Tensor& at, const Tensor& bt) {
  const auto a = at.to_double_vector(), b = bt.to_double_vector();
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return err <= 1e-5 * scale
             ? std::string()
             : "against another algorithm: relative error " + std::to_string(err / scale);
}

// Training batch norm over n x hw x hw x c in float32, forward or backward, checked against
// float64. Bytes: forward reads x twice (mean, then variance) and once more to write y;
// backward reads x and dy for the sums and again for dx.
void cpu_batchnorm(benchmark::State& state, const std::string& key, bool backward, int64_t n,
                   int64_t hw, int64_t c) {
  Generator gen(6);
  const Tensor x = Tensor::uniform({n, hw, hw, c}, -2, 3, gen);
  const Tensor dy = Tensor::uniform({n, hw, hw, c}, -1, 1, gen);
  const Tensor gamma = Tensor::uniform({c}, 0.5, 1.5, gen), beta = Tensor::uniform({c}, -1, 1, gen);
  auto run = [&](DType dt) {
    Tensor rm = Tensor::zeros({c}, dt), rv = Tensor::full({c}, 1.0, dt);
    const Tensor xd = x.to(dt), g = gamma.to(dt);
    auto [y, mean, inv_std] = tensor::batchnorm_train(xd, g, beta.to(dt), rm, rv, 0.1, 1e-5);
    return backward ? std::get<0>(tensor::batchnorm_backward(xd, dy.to(dt), g, mean, inv_std)) : y;
  };
  if (!validate_once(state, key,
                     [&] { return agree_to_float(run(DType::kFloat32), run(DType::kFloat64)); }))
    return;
  Tensor rm = Tensor::zeros({c}), rv = Tensor::full({c}, 1.0);
  auto [y, mean, inv_std] = tensor::batchnorm_train(x, gamma, beta, rm, rv, 0.1, 1e-5);
  const double s = time_cpu(state, [&] {
    return backward ? std::get<0>(tensor::batchnorm_backward(x, dy, gamma, mean, inv_std))
                    : std::get<0>(tensor::batchnorm_train(x, gamma, beta, rm, rv, 0.1, 1e-5));
  });
  set_rate(state, "GBps", static_cast<double>(3 * x.numel() * 4) * 1e-9 * (backward ? 5.0 / 3 : 1),
           s, 0);
}

// One pass (0 forward, 1 backward data, 2 backward filter) of a 3x3, stride-1, padding-1
// convolution n x hw x hw x c -> c.
// One pass of a 3x3 convolution (padding 1) at batch n: C -> C at stride 1, or a stage's first
// layer, C -> 2C at stride 2 (hw x hw in, hw/2 out).
void cpu_conv3x3(benchmark::State& state, const std::string& key, int pass, kernels::ConvAlgo algo,
                 int64_t n, int64_t hw, int64_t c, int64_t stride = 1) {
  using kernels::ConvAlgo;
  const int64_t c_out = c * stride;
  const kernels::Conv2dGeometry g{.n = n,
                                  .h = hw,
                                  .w = hw,
                                  .c_in = c,
                                  .c_out = c_out,
                                  .kh = 3,
                                  .kw = 3,
                                  .stride = stride,
                                  .pad = 1};
  Generator gen(3);
  const Tensor x = Tensor::uniform({n, hw, hw, c}, -1, 1, gen);
  const Tensor w = Tensor::uniform({c_out, 3, 3, c}, -1, 1, gen);
  const Tensor dy = Tensor::uniform({n, g.out_h(), g.out_w(), c_out}, -1, 1, gen);
  auto run = [&](ConvAlgo a) { return conv_pass(pass, x, w, dy, g, a); };
  const auto p = static_cast<kernels::ConvPass>(pass);
  if (algo == ConvAlgo::kDirect && !kernels::direct_applies(g, p)) {
    state.SkipWithError("the direct kernels do not run here (no AVX2/AVX-512, or the shape)");
    return;
  }
  if (algo == ConvAlgo::kWinograd && !kernels::winograd_applies(g)) {
    state.SkipWithError("Winograd F(2x2, 3x3) needs stride 1");
    return;
  }
  // Checked once against another algorithm that computes this pass.
  const ConvAlgo other = algo != ConvAlgo::kIm2col      ? ConvAlgo::kIm2col
                         : kernels::winograd_applies(g) ? ConvAlgo::kWinograd
                                                        : ConvAlgo::kDirect;
  if (!validate_once(state, key, [&] {
        if (other == ConvAlgo::kDirect && !kernels::direct_applies(g, p)) return std::string();
        return agree_to_float(run(algo), run(other));
      }))
    return;
  const double s = time_cpu(state, [&] { return run(algo); });
  set_rate(state, "GFLOPS",
           2.0 * static_cast<double>(n * g.out_h() * g.out_w() * c_out * 9 * c) * 1e-9, s, 0);
}

// One pass of a depthwise 3x3 convolution (padding 1; groups = channels = c), as MobileNetV2's:
// with the depthwise kernel (kAuto) or through im2col's grouped GEMMs, checked against the
// other once. GB/s count the bytes the pass must read and write (the layer is memory-bound:
// 9 multiply-adds per value), GFLOPS its multiply-adds.
void cpu_depthwise(benchmark::State& state, const std::string& key, int pass,
                   kernels::ConvAlgo algo, int64_t n, int64_t hw, int64_t c, int64_t stride) {
  using kernels::ConvAlgo;
  const kernels::Conv2dGeometry g{.n = n,
                                  .h = hw,
                                  .w = hw,
                                  .c_in = c,
                                  .c_out = c,
                                  .kh = 3,
                                  .kw = 3,
                                  .stride = stride,
                                  .pad = 1,
                                  .groups = c};
  Generator gen(5);
  const Tensor x = Tensor::uniform({n, hw, hw, c}, -1, 1, gen);
  const Tensor w = Tensor::uniform({c, 3, 3, 1}, -1, 1, gen);
  const Tensor dy = Tensor::uniform({n, g.out_h(), g.out_w(), c}, -1, 1, gen);
  auto run = [&](ConvAlgo a) { return conv_pass(pass, x, w, dy, g, a); };
  const ConvAlgo other = algo == ConvAlgo::kIm2col ? ConvAlgo::kAuto : ConvAlgo::kIm2col;
  if (!validate_once(state, key, [&] { return agree_to_float(run(algo), run(other)); })) return;
  const double s = time_cpu(state, [&] { return run(algo); });
  const double values = static_cast<double>(x.numel() + dy.numel());  // read or written
  set_rate(state, "GBps", values * 4 * 1e-9, s, 0);
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * static_cast<double>(dy.numel() * 9) * 1e-9 / s);
}

// One core's float <-> half conversions (op 0: to fp16, 1: to fp32, 2: the sum of two fp16
// arrays), on the F16C path or the portable one; GB/s count the bytes read and written.
void cpu_half(benchmark::State& state, const std::string& key, int op, bool f16c, int64_t n) {
  namespace kc = kernels::cpu;
  kc::use_f16c(f16c);
  if (f16c && std::string(kc::half_conversion_isa()) != "f16c") {
    state.SkipWithError("this CPU has no F16C");
    return;
  }
  Generator gen(4);
  const Tensor x = Tensor::uniform({n}, -70000, 70000, gen);  // beyond half's range too
  const Tensor h = tensor::cast(x, DType::kFloat16),
               h2 = tensor::cast(tensor::scale(x, 0.5), DType::kFloat16);
  const auto* hp = &h.data<kernels::Half>()->bits;
  // The output is allocated once; the sum adds into it again on every call (its values do
  // not change the speed of either path: both are branch-free).
  Tensor out = Tensor::empty({n}, op == 1 ? DType::kFloat32 : DType::kFloat16);
  if (op == 2) out.copy_from(h2);
  auto run = [&] {
    if (op == 0) kc::floats_to_halves(x.data<float>(), &out.data<kernels::Half>()->bits, n);
    if (op == 1) kc::halves_to_floats(hp, out.data<float>(), n);
    if (op == 2) kc::add_halves(hp, &out.data<kernels::Half>()->bits, n);
    return out;
  };
  if (!validate_once(state, key, [&] {  // against common.h's scalar conversions
        const std::vector<double> got = run().to_double_vector(), xs = x.to_double_vector(),
                                  hs = h.to_double_vector(), h2s = h2.to_double_vector();
        for (size_t i = 0; i < got.size(); i += 101) {
          const double want =
              op == 0   ? kernels::half_to_float(kernels::float_to_half(static_cast<float>(xs[i])))
              : op == 1 ? hs[i]
                        : kernels::half_to_float(kernels::float_to_half(
                              static_cast<float>(hs[i]) + static_cast<float>(h2s[i])));
          if (!(got[i] == want || (std::isnan(got[i]) && std::isnan(want))))
            return "element " + std::to_string(i) + " differs";
        }
        return std::string();
      })) {
    kc::use_f16c(true);
    return;
  }
  const double s = time_cpu(state, run);
  kc::use_f16c(true);
  // 6 bytes an element each way: 4 read and 2 written, 2 and 4, or 2 + 2 read and 2 written
  set_rate(state, "GBps", 6.0 * static_cast<double>(n) * 1e-9, s, 0);
}

// CpuAutoAugment/<policy>/BxHxWxC: --auto-augment on one core, images/s (the batch function
// against each sample's plan applied one operation at a time).
void cpu_auto_augment(benchmark::State& state, const std::string& key,
                      kernels::AutoAugmentPolicy policy, int64_t batch, int64_t hw, int64_t c) {
  Tensor px, ids;
  const kernels::AutoAugmentParams p = auto_augment_batch(policy, batch, hw, c, &px, &ids);
  auto run = [&] { return tensor::auto_augment(px, ids, p); };
  if (!validate_once(state, key, [&] {
        const std::vector<uint8_t> got = run().to_vector<uint8_t>(), in = px.to_vector<uint8_t>();
        const int64_t image = hw * hw * c;
        for (int64_t b = 0; b < batch; b += 13) {
          const std::vector<uint8_t> orig(in.begin() + b * image, in.begin() + (b + 1) * image);
          const kernels::AutoAugmentPlan plan = kernels::auto_augment_plan(p, 17 * b + 3);
          // A run of operations from `img`, one at a time.
          auto apply = [&](std::vector<uint8_t> img, int begin, int end) {
            std::vector<uint8_t> next(img.size());
            for (int k = begin; k < end; ++k) {
              kernels::cpu::apply_augment_op(img.data(), next.data(), hw, hw, c, plan.ops[k]);
              img.swap(next);
            }
            return img;
          };
          std::vector<uint8_t> img;
          if (plan.chains == 0) {
            img = apply(orig, 0, plan.count);
          } else {  // AugMix: the chains mixed with the original
            std::vector<float> mix(orig.size());
            for (size_t i = 0; i < mix.size(); ++i) mix[i] = plan.keep * orig[i];
            for (int ch = 0; ch < plan.chains; ++ch) {
              const auto part = apply(orig, plan.chain_begin[ch], plan.chain_begin[ch + 1]);
              for (size_t i = 0; i < mix.size(); ++i) mix[i] += plan.weight[ch] * part[i];
            }
            for (float v : mix) img.push_back(static_cast<uint8_t>(v));
          }
          if (!std::equal(img.begin(), img.end(), got.begin() + b * image))
            return "image " + std::to_string(b) + " differs from its plan applied step by step";
        }
        return std::string();
      }))
    return;
  const double s = time_cpu(state, run);
  set_rate(state, "Mimg_per_s", static_cast<double>(batch) * 1e-6, s, 0);
}

template <class Fn>
void add_cpu(const std::string& name, Fn fn) {
  benchmark::RegisterBenchmark(name.c_str(),
                               [name, fn](benchmark::State& state) { fn(state, name); })
      ->MinTime(kMinTime)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

void register_cpu_benchmarks() {
  const std::vector<std::vector<int64_t>> gemm_shapes = {
      {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {64, 128, 784},  // M, N, K
      // Weight gradients' shapes: narrow and deep (vit_cifar's 192 x 192 attention projections
      // over a batch of 128 x 65 tokens; a 256-wide layer over 16384 positions).
      {192, 192, 8320}, {256, 256, 16384}};
  for (const auto& s : gemm_shapes) {
    const std::string size =
        std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
    add_cpu("CpuGemm/fp32/" + size, [s](benchmark::State& st, const std::string& key) {
      cpu_gemm(st, key, s[0], s[1], s[2]);
    });
    if (s[2] > 4 * std::max(s[0], s[1]))  // (the deep ones: their split against one call)
      add_cpu("CpuGemmOneCall/fp32/" + size, [s](benchmark::State& st, const std::string&) {
        cpu_gemm_one_call(st, s[0], s[1], s[2]);
      });
  }
  for (int64_t n : {int64_t{1} << 20, int64_t{1} << 24}) {
    const std::string size = count_label(n);
    add_cpu("CpuAdd/fp32/" + size, [n](benchmark::State& st, const std::string& key) {
      cpu_elementwise(st, key, true, n);
    });
    add_cpu("CpuRelu/fp32/" + size, [n](benchmark::State& st, const std::string& key) {
      cpu_elementwise(st, key, false, n);
    });
    add_cpu("CpuSum/fp32/" + size,
            [n](benchmark::State& st, const std::string& key) { cpu_sum(st, key, n); });
  }
  for (auto [policy, name] : auto_augment_policies())
    add_cpu(std::string("CpuAutoAugment/") + name + "/256x32x32x3",
            [policy](benchmark::State& st, const std::string& key) {
              cpu_auto_augment(st, key, policy, 256, 32, 3);
            });
  for (int op = 0; op < 3; ++op)
    for (bool f16c : {true, false}) {
      const int64_t n = int64_t{1} << 24;
      const char* ops[] = {"to_fp16", "to_fp32", "sum"};
      add_cpu(
          std::string("CpuHalf/") + ops[op] + (f16c ? "/f16c/" : "/portable/") + count_label(n),
          [=](benchmark::State& st, const std::string& key) { cpu_half(st, key, op, f16c, n); });
    }
  // resnet18_cifar's stages, then resnet20's (16, 32, 64 channels at 32, 16, 8 pixels).
  for (auto [hw, c] : {std::pair<int64_t, int64_t>{32, 64}, {16, 128}, {8, 256}, {4, 512},
                       {32, 16}, {16, 32}, {8, 64}}) {
    const std::string size = "32x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" +
                             std::to_string(c);
    for (int pass = 0; pass < 3; ++pass)
      for (auto [algo, algo_name] :
           {std::pair{kernels::ConvAlgo::kIm2col, "im2col"},
            std::pair{kernels::ConvAlgo::kWinograd, "winograd"},
            std::pair{kernels::ConvAlgo::kDirect, "direct"}}) {
        const char* passes[] = {"fwd", "bwd_data", "bwd_filter"};
        add_cpu(std::string("CpuConv3x3/") + passes[pass] + "/" + algo_name + "/" + size,
                [=](benchmark::State& st, const std::string& key) {
                  cpu_conv3x3(st, key, pass, algo, 32, hw, c);
                });
      }
  }
  // The stride-2 first layers of resnet18_cifar's stages 2-4 (C -> 2C, hw -> hw/2): direct
  // kernels or im2col (no Winograd at stride 2; no direct backward data either).
  for (auto [hw, c] : {std::pair<int64_t, int64_t>{32, 64}, {16, 128}, {8, 256}}) {
    const std::string size =
        "32x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" + std::to_string(c) + "-s2";
    for (int pass = 0; pass < 3; ++pass)
      for (auto [algo, algo_name] : {std::pair{kernels::ConvAlgo::kIm2col, "im2col"},
                                     std::pair{kernels::ConvAlgo::kDirect, "direct"}}) {
        if (pass == 1 && algo == kernels::ConvAlgo::kDirect) continue;
        const char* passes[] = {"fwd", "bwd_data", "bwd_filter"};
        add_cpu(std::string("CpuConv3x3/") + passes[pass] + "/" + algo_name + "/" + size,
                [=](benchmark::State& st, const std::string& key) {
                  cpu_conv3x3(st, key, pass, algo, 32, hw, c, 2);
                });
      }
  }
  // mobilenet_v2_cifar's depthwise layers at batch 32 (hidden widths 144 at 32x32, its stride-2
  // one, 192 at 16x16, 384 at 8x8, 960 at 4x4).
  for (auto [hw, c, stride] : {std::tuple<int64_t, int64_t, int64_t>{32, 144, 1},
                               {32, 144, 2},
                               {16, 192, 1},
                               {8, 384, 1},
                               {4, 960, 1}}) {
    const std::string size = "32x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" +
                             std::to_string(c) + (stride == 2 ? "-s2" : "");
    for (int pass = 0; pass < 3; ++pass)
      for (auto [algo, algo_name] : {std::pair{kernels::ConvAlgo::kAuto, "depthwise"},
                                     std::pair{kernels::ConvAlgo::kIm2col, "im2col"}}) {
        const char* passes[] = {"fwd", "bwd_data", "bwd_filter"};
        add_cpu(std::string("CpuConvDepthwise/") + passes[pass] + "/" + algo_name + "/" + size,
                [=](benchmark::State& st, const std::string& key) {
                  cpu_depthwise(st, key, pass, algo, 32, hw, c, stride);
                });
      }
  }
  for (auto [hw, c] : {std::pair<int64_t, int64_t>{32, 144}, {32, 32}, {16, 192}, {8, 384}})
    for (bool bwd : {false, true}) {
      const std::string size =
          "32x" + std::to_string(hw) + "x" + std::to_string(hw) + "x" + std::to_string(c);
      add_cpu(std::string("CpuBatchNorm/") + (bwd ? "bwd/" : "fwd/") + size,
              [=](benchmark::State& st, const std::string& key) {
                cpu_batchnorm(st, key, bwd, 32, hw, c);
              });
    }
  for (auto [rows, classes] : {std::pair<int64_t, int64_t>{256, 10}, {4096, 1000}}) {
    const std::string size = std::to_string(rows) + "x" + std::to_string(classes);
    for (bool bwd : {false, true}) {
      add_cpu(std::string(bwd ? "CpuSoftmaxXentBwd" : "CpuSoftmaxXentFwd") + "/fp32/" + size,
              [=](benchmark::State& st, const std::string& key) {
                cpu_xent(st, key, bwd, rows, classes);
              });
    }
  }
}

[[maybe_unused]] const bool kRegistered = (register_cpu_benchmarks(), true);

}  // namespace
}  // namespace mlai::bench
