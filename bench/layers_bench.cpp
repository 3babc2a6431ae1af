// Fused layer epilogues against the separate ops they replace, forward + backward of one layer:
//   <Dev>BnAddRelu/<dtype>/<fused|unfused>/NxHxWxC: relu(bn(x) + z) in training mode as one op
//     (tensor::batchnorm_act_*) or as batch norm (cuDNN on CUDA), add and relu with their
//     backwards: ResNet's block epilogue at its largest (resnet18_cifar's first stage);
//   CudaLinear/<dtype>/<epilogue|unfused>/BxINxOUT: relu(x W^T + b) and its weight and bias
//     gradients with the cuBLASLt epilogues or as GEMM + bias_act / sum_dim: the MLP's layer;
//   CudaConv/<fp16|bf16|fp32>/<fwd|dgrad|wgrad>/NxHxWxC-<K>k<R>s<S>: one cuDNN convolution pass (output,
//     input gradient, filter gradient) at each shape of resnet18 on 32x32 images at batch 256
//     (and resnet18_cifar's first stage), with host_us, the CPU's time to issue one call:
//     issue #5's resnet18 case, shape by shape, beside torch's same convolutions (gpu-check).
// Each validates against the CPU (float64 maths) once, then times; GBps counts the bytes the
// fused version must move (its minimum), so both variants of a pair share the numerator.
//   build/bench/mlai_bench_kernels --benchmark_filter='BnAddRelu|CudaLinear'
#include <benchmark/benchmark.h>

#include <string>
#include <tuple>
#include <vector>

#include "bench/bench_util.h"
#include "tensor/linear_ops.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::bench {
namespace {

using tensor::Device;
using tensor::DType;
using tensor::Generator;
using tensor::Tensor;

struct BnInputs {
  Tensor x, z, dy, gamma, beta;
};
BnInputs bn_inputs(const tensor::Shape& s, DType dt, Device dev) {
  Generator gen(21);
  const int64_t c = s.back();
  const DType pdt = dt == DType::kFloat64 ? dt : DType::kFloat32;
  return {Tensor::uniform(s, -1, 3, gen, dt, dev), Tensor::uniform(s, -1, 1, gen, dt, dev),
          Tensor::uniform(s, -1, 1, gen, dt, dev), Tensor::uniform({c}, 0.5, 1.5, gen, pdt, dev),
          Tensor::uniform({c}, -1, 1, gen, pdt, dev)};
}

// One training forward + backward; returns dx (so the work cannot be skipped).
Tensor bn_step(const BnInputs& in, bool fused) {
  Tensor rm, rv;  // running statistics not tracked: the same work on both sides
  if (fused) {
    auto [y, mean, inv_std] =
        tensor::batchnorm_act_train(in.x, in.gamma, in.beta, in.z, true, rm, rv, 0.1, 1e-5);
    return tensor::batchnorm_act_backward(in.x, in.dy, in.gamma, mean, inv_std, y, true).dx;
  }
  auto [y0, mean, inv_std] = tensor::batchnorm_train(in.x, in.gamma, in.beta, rm, rv, 0.1, 1e-5);
  const Tensor y = tensor::relu(tensor::add(y0, in.z));
  const Tensor g = tensor::relu_backward(in.dy, y);
  return std::get<0>(tensor::batchnorm_backward(in.x, g, in.gamma, mean, inv_std));
}

// Fused and unfused give the same dx (up to rounding): the check before timing.
std::string check_bn(const BnInputs& in, DType dt) {
  const double err = tensor::max_rel_error(tensor::cast(bn_step(in, true), DType::kFloat64),
                                           tensor::cast(bn_step(in, false), DType::kFloat64));
  const double tol = dt == DType::kFloat32 ? 1e-4 : 2e-2;
  return err <= tol ? "" : "fused vs unfused dx: max rel error " + std::to_string(err);
}

// x, z, y, dy, dx, dz once each, and x twice more (statistics pass, gradient-sums pass).
double bn_bytes(const tensor::Shape& s, DType dt) {
  double n = 1;
  for (int64_t d : s) n *= static_cast<double>(d);
  return 8 * n * static_cast<double>(tensor::dtype_size(dt));
}

void bn_add_relu(benchmark::State& state, const std::string& key, Device dev, DType dt, bool fused,
                 const tensor::Shape& s) {
  if (dev.is_cuda() && !require_cuda(state)) return;
  const BnInputs in = bn_inputs(s, dt, dev);
  if (!validate_once(state, key, [&] { return check_bn(in, dt); })) return;
  const double bytes = bn_bytes(s, dt);
  Tensor dx;
  if (dev.is_cuda()) {
    const double sec = time_cuda(state, 5, [&](int) { dx = bn_step(in, fused); });
    set_rate(state, "GBps", bytes * 1e-9, sec, cuda_peak(0).hbm_gbps);
    return;
  }
  for (auto _ : state) {
    dx = bn_step(in, fused);
    benchmark::DoNotOptimize(dx.data_ptr());
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
}

void cuda_linear(benchmark::State& state, const std::string& key, DType dt, bool epilogue,
                 int64_t batch, int64_t in_f, int64_t out_f) {
  if (!require_cuda(state)) return;
  const Device gpu = Device::cuda(0);
  Generator gen(22);
  const Tensor x = Tensor::uniform({batch, in_f}, -1, 1, gen, dt, gpu);
  const Tensor w = Tensor::uniform({out_f, in_f}, -0.05, 0.05, gen, dt, gpu);
  const Tensor b = Tensor::uniform({out_f}, -0.5, 0.5, gen, dt, gpu);
  const Tensor dy = Tensor::uniform({batch, out_f}, -1, 1, gen, dt, gpu);
  auto step = [&] {
    tensor::set_gemm_epilogues(epilogue);
    const Tensor y = tensor::linear_forward(x, w, b, true);
    const Tensor gz = tensor::relu_backward(dy, y);
    auto [dw, db] = tensor::linear_weight_grad(gz, x, true);
    tensor::set_gemm_epilogues(true);
    return dw;
  };
  if (!validate_once(state, key, [&] {
        const Tensor ref = tensor::linear_forward(x.to(Device::cpu()), w.to(Device::cpu()),
                                                  b.to(Device::cpu()), true);
        tensor::set_gemm_epilogues(epilogue);
        const Tensor y = tensor::linear_forward(x, w, b, true);
        tensor::set_gemm_epilogues(true);
        const double err = tensor::max_rel_error(tensor::cast(y, DType::kFloat32),
                                                 tensor::cast(ref, DType::kFloat32));
        return err <= (dt == DType::kFloat32 ? 1e-4 : 1e-2)
                   ? std::string()
                   : "y: max rel error " + std::to_string(err);
      }))
    return;
  Tensor dw;
  const double sec = time_cuda(state, 20, [&](int) { dw = step(); });
  const double flops = 2.0 * 2 * static_cast<double>(batch * in_f * out_f);  // y and dw
  set_rate(state, "TFLOPS", flops * 1e-12, sec, 0);
}

// One convolution of a ResNet: x [n, h, w, c_in], filter k x k, c_out outputs.
struct ConvShape {
  int64_t n, h, w, c_in, c_out, k, stride, pad;
  std::string name() const {
    return std::to_string(n) + "x" + std::to_string(h) + "x" + std::to_string(w) + "x" +
           std::to_string(c_in) + "-" + std::to_string(c_out) + "k" + std::to_string(k) + "s" +
           std::to_string(stride);
  }
  int64_t out(int64_t side) const { return (side + 2 * pad - k) / stride + 1; }
  double flops() const {  // multiply-adds x 2; the same for all three passes
    return 2.0 * static_cast<double>(n * out(h) * out(w) * c_out * c_in * k * k);
  }
};

// resnet18 on 32x32 input (the stem leaves 8x8 after the max pool), batch 256: every distinct
// convolution; then resnet18_cifar's first stage (32x32 x 64), for contrast.
const std::vector<ConvShape>& conv_shapes() {
  static const std::vector<ConvShape> shapes = {
      {256, 32, 32, 3, 64, 7, 2, 3},    {256, 8, 8, 64, 64, 3, 1, 1},
      {256, 8, 8, 64, 128, 3, 2, 1},    {256, 8, 8, 64, 128, 1, 2, 0},
      {256, 4, 4, 128, 128, 3, 1, 1},   {256, 4, 4, 128, 256, 3, 2, 1},
      {256, 2, 2, 256, 256, 3, 1, 1},   {256, 2, 2, 256, 512, 3, 2, 1},
      {256, 1, 1, 512, 512, 3, 1, 1},   {256, 32, 32, 64, 64, 3, 1, 1}};
  return shapes;
}

enum class ConvPass { kForward, kData, kFilter };

struct ConvInputs {
  Tensor x, w, dy;
};
ConvInputs conv_inputs(const ConvShape& c, int64_t n, DType dt, Device dev) {
  Generator gen(23);
  return {Tensor::uniform({n, c.h, c.w, c.c_in}, -1, 1, gen, dt, dev),
          Tensor::uniform({c.c_out, c.k, c.k, c.c_in}, -0.2, 0.2, gen, dt, dev),
          Tensor::uniform({n, c.out(c.h), c.out(c.w), c.c_out}, -1, 1, gen, dt, dev)};
}

Tensor conv_pass(const ConvInputs& in, const ConvShape& c, ConvPass pass) {
  switch (pass) {
    case ConvPass::kForward:
      return tensor::conv2d(in.x, in.w, Tensor(), c.stride, c.pad);
    case ConvPass::kData:
      return tensor::conv2d_backward_data(in.dy, in.w, in.x.shape(), c.stride, c.pad);
    default:
      return tensor::conv2d_backward_filter(in.x, in.dy, in.w.shape(), c.stride, c.pad, false)
          .first;
  }
}

void cuda_conv(benchmark::State& state, const std::string& key, DType dt, ConvPass pass,
               const ConvShape& c) {
  if (!require_cuda(state)) return;
  // Checked against the CPU twin (float arithmetic on the same values) at batch 4 first.
  if (!validate_once(state, key, [&] {
        const ConvInputs g = conv_inputs(c, 4, dt, Device::cuda(0));
        const ConvInputs h{g.x.to(Device::cpu()), g.w.to(Device::cpu()), g.dy.to(Device::cpu())};
        const Tensor got = tensor::cast(conv_pass(g, c, pass), DType::kFloat64);
        const Tensor want = tensor::cast(conv_pass(h, c, pass), DType::kFloat64);
        const double err = rel_l2_error(got.to_double_vector(), want.to_double_vector());
        // (fp16 and bf16 products are exact in fp32 accumulation; the output's rounding is
        // 2^-11 or 2^-8 relative)
        const double tol = dt == DType::kFloat32 ? 1e-4 : dt == DType::kFloat16 ? 1e-2 : 2e-2;
        return err <= tol ? std::string()
                          : "rel L2 error " + std::to_string(err) + " against the CPU";
      }))
    return;
  const ConvInputs in = conv_inputs(c, c.n, dt, Device::cuda(0));
  Tensor out;
  double host_s = 0;
  const double sec = time_cuda(state, 20, [&](int) { out = conv_pass(in, c, pass); }, &host_s);
  const bool tensor_cores = dt != DType::kFloat32;
  set_rate(state, "TFLOPS", c.flops() * 1e-12, sec,
           tensor_cores ? cuda_peak(0).tensor_tflops : cuda_peak(0).fp32_tflops);
  state.counters["host_us"] = host_s * 1e6;
}

void register_conv_benchmarks() {
  const std::pair<ConvPass, const char*> passes[] = {
      {ConvPass::kForward, "fwd"}, {ConvPass::kData, "dgrad"}, {ConvPass::kFilter, "wgrad"}};
  // bf16 too: on the last H200 run resnet18 at 32x32 stepped in 9.5 ms in bf16 against 12.9 ms
  // in fp16 (same bytes); these rows say whether the convolutions make that difference.
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32})
    for (const auto& [pass, pass_name] : passes)
      for (const ConvShape& c : conv_shapes()) {
        const std::string name =
            "CudaConv/" + short_dtype(dt) + "/" + pass_name + "/" + c.name();
        benchmark::RegisterBenchmark(
            name.c_str(), [=](benchmark::State& st) { cuda_conv(st, name, dt, pass, c); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
}

void register_layer_benchmarks() {
  register_conv_benchmarks();
  for (bool fused : {true, false}) {
    const std::string v = fused ? "fused" : "unfused";
    const tensor::Shape cpu_shape{32, 32, 32, 64};
    benchmark::RegisterBenchmark(("CpuBnAddRelu/fp32/" + v + "/32x32x32x64").c_str(),
                                 [=](benchmark::State& st) {
                                   bn_add_relu(st, "CpuBnAddRelu/" + v, Device::cpu(),
                                               DType::kFloat32, fused, cpu_shape);
                                 })
        ->Unit(benchmark::kMillisecond);
    for (DType dt : {DType::kFloat32, DType::kFloat16}) {
      const std::string name = "CudaBnAddRelu/" + short_dtype(dt) + "/" + v + "/256x32x32x64";
      benchmark::RegisterBenchmark(
          name.c_str(),
          [=](benchmark::State& st) {
            bn_add_relu(st, name, Device::cuda(0), dt, fused, {256, 32, 32, 64});
          })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      const std::string lname =
          "CudaLinear/" + short_dtype(dt) + "/" + (fused ? "epilogue" : "unfused") + "/64x784x1024";
      benchmark::RegisterBenchmark(
          lname.c_str(),
          [=](benchmark::State& st) { cuda_linear(st, lname, dt, fused, 64, 784, 1024); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

[[maybe_unused]] const bool kRegistered = (register_layer_benchmarks(), true);

}  // namespace
}  // namespace mlai::bench
