// Helpers shared by the kernel benchmarks: the GPU's peak rates (to print next to what was
// achieved), event-based timing on the current CUDA stream, and the check that runs once per
// benchmark before anything is timed.
#pragma once

#include <benchmark/benchmark.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/auto_augment.h"
#include "tensor/tensor.h"

namespace mlai::bench {

// Datasheet peaks of a CUDA device; 0 where unknown. tensor_tflops is dense fp16/bf16 on the
// tensor cores; fp32_tflops is plain fp32 (no tensor cores, no TF32).
struct DevicePeak {
  std::string name;
  double hbm_gbps = 0;
  double fp32_tflops = 0;
  double tensor_tflops = 0;
};

// Peaks of cuda:`device`: from a table of known cards by name; for others, the bandwidth is
// computed from the memory clock and bus width and the compute peaks stay 0.
const DevicePeak& cuda_peak(int device = 0);

// Runs `check` the first time `key` is seen (Google Benchmark calls a benchmark function several
// times while it sizes the iteration count). `check` returns "" when the result is right, or
// a message; a failed check is remembered, and every call then ends in SkipWithError, so a
// wrong kernel is reported instead of timed. Returns false when the benchmark must stop.
bool validate_once(benchmark::State& state, const std::string& key,
                   const std::function<std::string()>& check);

// Skips with "no CUDA device" (and returns false) when cuda:0 does not exist.
bool require_cuda(benchmark::State& state);

// Times `op(i)` on cuda:0's current stream with CUDA events: one warm-up call, then each
// benchmark iteration runs `reps` calls between two events (so that the launch gaps of small
// kernels average out) and reports their mean as the iteration's manual time. Returns the mean
// device seconds per call. Register the benchmark with UseManualTime().
double time_cuda(benchmark::State& state, int reps, const std::function<void(int)>& op);
// The same, and *host_s gets the host's mean seconds to issue one call (what the calls cost the
// CPU, launch and library overhead: a step of such calls is launch-bound when this is near the
// device time).
double time_cuda(benchmark::State& state, int reps, const std::function<void(int)>& op,
                 double* host_s);

// ||out - ref|| / ||ref|| (L2); infinity when out has a NaN or the sizes differ.
double rel_l2_error(const std::vector<double>& out, const std::vector<double>& ref);

// Sets the rate counters of a benchmark whose per-call time is known (GPU, manual time):
// rate = amount / seconds, and the peak and the percentage of it when peak > 0.
void set_rate(benchmark::State& state, const char* unit, double amount_per_call,
              double seconds_per_call, double peak);

// "64M", "16K", "1000": short element counts for benchmark names.
std::string count_label(long long n);

// "fp32", "fp16", "bf16": the dtype part of benchmark names.
std::string short_dtype(tensor::DType dt);

// int64 labels in [0, classes) on `device`, drawn from `gen`.
tensor::Tensor random_labels(int64_t rows, int64_t classes, tensor::Generator& gen,
                             tensor::Device device = tensor::Device::cpu());

// A batch of `batch` random uint8 images (hw x hw x c) on the CPU, sample ids 17 b + 3, and
// the automatic-augmentation parameters for them (the CpuAutoAugment and CudaAutoAugment rows).
kernels::AutoAugmentParams auto_augment_batch(kernels::AutoAugmentPolicy policy, int64_t batch,
                                              int64_t hw, int64_t c, tensor::Tensor* pixels,
                                              tensor::Tensor* ids);
// The policies by their --auto-augment names.
std::vector<std::pair<kernels::AutoAugmentPolicy, std::string>> auto_augment_policies();

}  // namespace mlai::bench
