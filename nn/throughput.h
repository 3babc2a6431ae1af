// Lightning's ThroughputMonitor for mlai: the floating-point work of training (the matrix
// products autograd counted, autograd::flop_count) per second and per device, and the model
// FLOPs utilisation (MFU): that rate over the device's dense peak for the precision trained in.
#pragma once

#include <string>

namespace mlai::nn {

// The arithmetic a run's matrix products use on a GPU.
enum class PeakDtype { kFloat32, kTf32, kFloat16, kBFloat16 };

// --precision 16 | bf16 | 32, with --float32-matmul-precision (high or medium: TF32 tensor cores).
PeakDtype peak_dtype(const std::string& precision, const std::string& float32_matmul_precision);

// The dense peak FLOP/s (no 2:4 sparsity) of the data-centre GPU that CUDA names `device_name`
// ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", ...) in that arithmetic, from NVIDIA's
// datasheets; 0 where it is not known (other GPUs, CPUs) or not supported (bf16 on a V100).
double peak_flops(const std::string& device_name, PeakDtype dt);

}  // namespace mlai::nn
