// Devices: the CPU and CUDA GPUs by index. GPU presence is probed once at run time; a machine
// without a driver or GPU simply has zero CUDA devices and uses the CPU backend.
#pragma once

#include <string>

namespace mlai::tensor {

enum class DeviceType { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int index = 0) { return {DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  std::string str() const;
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

// Number of usable CUDA devices: 0 when built without CUDA or when cudaGetDeviceCount fails
// (no driver, no GPU). Never throws; the probe runs once.
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }
// Why there is no GPU, for messages ("built without CUDA", "no CUDA driver: ...").
std::string cuda_unavailable_reason();

// Throws a one-line error when `d` is a CUDA device that does not exist here.
void check_device(const Device& d);

// Parses "cpu", "cuda", "cuda:N" or "auto" (CUDA device 0 when one exists, else the CPU) and
// checks that the device exists. Errors name the bad spec.
Device parse_device(const std::string& spec);

// The GPU's name ("NVIDIA H100 80GB HBM3"); throws like check_device for a missing device.
std::string cuda_device_name(int device);

// Makes `d` the current CUDA device of this thread (no-op for the CPU).
void set_current_device(const Device& d);

}  // namespace mlai::tensor
