// See anomaly.h.
#include "autograd/anomaly.h"

#include <atomic>
#include <cmath>
#include <vector>

#include "tensor/ops.h"

namespace mlai::autograd {
namespace {
std::atomic<bool> g_forward{false}, g_backward{false};
}  // namespace

void set_detect_anomaly(bool forward, bool backward) {
  g_forward.store(forward, std::memory_order_relaxed);
  g_backward.store(backward, std::memory_order_relaxed);
}
bool anomaly_forward() { return g_forward.load(std::memory_order_relaxed); }
bool anomaly_backward() { return g_backward.load(std::memory_order_relaxed); }

bool all_finite(const tensor::Tensor& t) {
  if (!t.defined() || t.numel() == 0 || !tensor::is_floating(t.dtype())) return true;
  tensor::Tensor found = tensor::Tensor::zeros({1}, tensor::DType::kFloat32, t.device());
  std::vector<tensor::Tensor> one{t};
  // (The AMP kernel with no scale only looks; float64 has no kernel there: a sum does it.)
  if (t.dtype() == tensor::DType::kFloat64) return std::isfinite(tensor::sum(t).item());
  tensor::unscale_check_finite_(one, tensor::Tensor(), found);
  return found.item() == 0.0;
}

}  // namespace mlai::autograd
