// Device peaks, CUDA event timing and the validate-once bookkeeping for the benchmarks. This
// is the one bench file that includes a CUDA header (for the device name and memory clock),
// and only in CUDA builds.
#include "bench/bench_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>

#include "kernels/parallel.h"
#include "tensor/device.h"
#include "tensor/stream.h"

#ifdef MLAI_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace mlai::bench {

namespace {

// The benchmarks run the kernels with the threads set as mlai_train sets them (one process):
// OpenBLAS single-threaded, large products split on the kernel pool.
[[maybe_unused]] const int kThreads = kernels::cpu::configure_threads(1);

struct KnownCard {
  const char* name_part;  // first match wins: more specific names first
  double hbm_gbps, fp32_tflops, tensor_tflops;
};

// NVIDIA datasheets (dense, no sparsity). Bandwidth 0: take it from the memory clock.
constexpr KnownCard kKnownCards[] = {
    {"H200 NVL", 4800, 60, 835}, {"H200", 4800, 67, 989},      {"GH200", 0, 67, 989},
    {"H100 NVL", 3900, 60, 835}, {"H100 PCIe", 2000, 51, 756}, {"H100", 3350, 67, 989},
    {"A100", 0, 19.5, 312},
};

DevicePeak query_peak(int device) {
  DevicePeak p;
#ifdef MLAI_WITH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return p;
  p.name = prop.name;
  int mem_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess) {
    // Double data rate: two transfers per clock over the whole bus.
    p.hbm_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) * 1e-9;
  }
  for (const KnownCard& c : kKnownCards) {
    if (p.name.find(c.name_part) == std::string::npos) continue;
    if (c.hbm_gbps > 0) p.hbm_gbps = c.hbm_gbps;
    p.fp32_tflops = c.fp32_tflops;
    p.tensor_tflops = c.tensor_tflops;
    break;
  }
#else
  (void)device;
#endif
  return p;
}

}  // namespace

const DevicePeak& cuda_peak(int device) {
  static std::mutex mu;
  static std::map<int, DevicePeak> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it == cache.end()) it = cache.emplace(device, query_peak(device)).first;
  return it->second;
}

bool validate_once(benchmark::State& state, const std::string& key,
                   const std::function<std::string()>& check) {
  static std::map<std::string, std::string> verdicts;  // key -> "" (passed) or the message
  auto it = verdicts.find(key);
  if (it == verdicts.end()) {
    std::string msg;
    try {
      msg = check();
    } catch (const std::exception& e) {
      msg = std::string("exception: ") + e.what();
    }
    if (!msg.empty()) std::fprintf(stderr, "VALIDATION FAILED %s: %s\n", key.c_str(), msg.c_str());
    it = verdicts.emplace(key, msg).first;
  }
  if (it->second.empty()) return true;
  state.SkipWithError(("validation failed: " + it->second).c_str());
  return false;
}

bool require_cuda(benchmark::State& state) {
  if (tensor::cuda_available()) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

double time_cuda(benchmark::State& state, int reps, const std::function<void(int)>& op) {
  double host = 0;
  return time_cuda(state, reps, op, &host);
}

double time_cuda(benchmark::State& state, int reps, const std::function<void(int)>& op,
                 double* host_s) {
  using tensor::Device;
  using Clock = std::chrono::steady_clock;
  const Device dev = Device::cuda(0);
  const tensor::Stream stream = tensor::current_stream(dev);
  tensor::Event start(dev, /*timing=*/true), stop(dev, /*timing=*/true);
  op(0);  // warm-up: library handles, allocator cache, kernel module load
  stream.synchronize();
  double total_s = 0, issue_s = 0;
  long long calls = 0;
  int i = 1;
  for (auto _ : state) {
    start.record(stream);
    const auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) op(i++);
    issue_s += std::chrono::duration<double>(Clock::now() - t0).count();
    stop.record(stream);
    stop.synchronize();
    const double s = static_cast<double>(start.elapsed_ms(stop)) * 1e-3;
    state.SetIterationTime(s / reps);
    total_s += s;
    calls += reps;
  }
  *host_s = calls > 0 ? issue_s / static_cast<double>(calls) : 0.0;
  return calls > 0 ? total_s / static_cast<double>(calls) : 0.0;
}

double rel_l2_error(const std::vector<double>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (std::isnan(out[i])) return INFINITY;
    diff += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

void set_rate(benchmark::State& state, const char* unit, double amount_per_call,
              double seconds_per_call, double peak) {
  if (seconds_per_call <= 0) return;
  const double rate = amount_per_call / seconds_per_call;
  state.counters[unit] = rate;
  if (peak > 0) {
    state.counters[std::string("peak_") + unit] = peak;
    state.counters["pct_peak"] = 100.0 * rate / peak;
  }
}

std::string count_label(long long n) {
  if (n >= (1LL << 20) && n % (1LL << 20) == 0) return std::to_string(n >> 20) + "M";
  if (n >= (1LL << 10) && n % (1LL << 10) == 0) return std::to_string(n >> 10) + "K";
  return std::to_string(n);
}

std::string short_dtype(tensor::DType dt) {
  switch (dt) {
    case tensor::DType::kFloat32:
      return "fp32";
    case tensor::DType::kFloat16:
      return "fp16";
    case tensor::DType::kBFloat16:
      return "bf16";
    default:
      return tensor::dtype_name(dt);
  }
}

tensor::Tensor random_labels(int64_t rows, int64_t classes, tensor::Generator& gen,
                             tensor::Device device) {
  const tensor::Tensor u = tensor::Tensor::uniform({rows}, 0.0, static_cast<double>(classes), gen,
                                                   tensor::DType::kFloat64);
  const double* p = u.data<double>();
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (size_t i = 0; i < labels.size(); ++i)
    labels[i] = std::min<int64_t>(static_cast<int64_t>(p[i]), classes - 1);
  return tensor::Tensor::from_vector(labels, {rows}).to(device);
}

kernels::AutoAugmentParams auto_augment_batch(kernels::AutoAugmentPolicy policy, int64_t batch,
                                              int64_t hw, int64_t c, tensor::Tensor* pixels,
                                              tensor::Tensor* ids) {
  kernels::AutoAugmentParams p;
  p.batch = batch;
  p.height = p.width = hw;
  p.channels = c;
  p.policy = policy;
  p.seed = 7;
  std::vector<uint8_t> v(static_cast<size_t>(batch * hw * hw * c));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (auto& x : v) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    x = static_cast<uint8_t>(s >> 56);
  }
  *pixels = tensor::Tensor::from_vector(v, {batch, hw, hw, c});
  std::vector<int64_t> idv(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) idv[static_cast<size_t>(b)] = 17 * b + 3;
  *ids = tensor::Tensor::from_vector(idv, {batch});
  return p;
}

std::vector<std::pair<kernels::AutoAugmentPolicy, std::string>> auto_augment_policies() {
  using P = kernels::AutoAugmentPolicy;
  return {{P::kTrivialAugmentWide, "ta_wide"},
          {P::kRandAugment, "ra"},
          {P::kImageNet, "imagenet"},
          {P::kCifar10, "cifar10"},
          {P::kSvhn, "svhn"},
          {P::kAugMix, "augmix"}};
}

}  // namespace mlai::bench
