// Device names, parsing, and the one-time GPU probe.
#include "tensor/device.h"

#include <mutex>
#include <stdexcept>

#ifdef MLAI_WITH_CUDA
#include "tensor/cuda_backend.h"
#endif

namespace mlai::tensor {

namespace {
struct Probe {
  int count = 0;
  std::string reason;
};
const Probe& probe() {
  static const Probe p = [] {
    Probe r;
#ifdef MLAI_WITH_CUDA
    r.count = cuda_backend::device_count(&r.reason);
    if (r.count == 0 && r.reason.empty()) r.reason = "no CUDA device found";
#else
    r.reason = "mlai was built without CUDA (-DMLAI_CUDA=OFF)";
#endif
    return r;
  }();
  return p;
}
}  // namespace

std::string Device::str() const {
  return is_cpu() ? "cpu" : "cuda:" + std::to_string(index);
}

int cuda_device_count() { return probe().count; }
std::string cuda_unavailable_reason() { return probe().reason; }

void check_device(const Device& d) {
  if (d.is_cpu()) return;
  const int n = cuda_device_count();
  if (n == 0)
    throw std::runtime_error("device " + d.str() + " requested but CUDA is unavailable: " +
                             cuda_unavailable_reason());
  if (d.index < 0 || d.index >= n)
    throw std::runtime_error("device " + d.str() + " does not exist (this node has " +
                             std::to_string(n) + " CUDA device(s))");
}

Device parse_device(const std::string& spec) {
  Device d;
  if (spec == "cpu") {
    return Device::cpu();
  } else if (spec == "auto") {
    return cuda_available() ? Device::cuda(0) : Device::cpu();
  } else if (spec == "cuda" || spec == "gpu") {
    d = Device::cuda(0);
  } else if (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 &&
             spec.find_first_not_of("0123456789", 5) == std::string::npos) {
    d = Device::cuda(std::stoi(spec.substr(5)));
  } else {
    throw std::invalid_argument("invalid device '" + spec +
                                "' (expected cpu, cuda, cuda:N or auto)");
  }
  check_device(d);
  return d;
}

std::string cuda_device_name(int device) {
  check_device(Device::cuda(device));
#ifdef MLAI_WITH_CUDA
  return cuda_backend::device_name(device);
#else
  return "";
#endif
}

void set_current_device(const Device& d) {
#ifdef MLAI_WITH_CUDA
  if (d.is_cuda()) cuda_backend::set_device(d.index);
#else
  (void)d;
#endif
}

}  // namespace mlai::tensor
