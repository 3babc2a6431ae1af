// --detect-anomaly: torch.autograd.detect_anomaly, Lightning's Trainer(detect_anomaly=True).
// While on, every module's forward output (nn::Module) and every gradient a backward op
// produces (the engine) is checked for inf and nan: one device reduction and one host read
// each, so it is slow and meant for finding where a run goes nan. The first value found
// throws AnomalyError naming the module (its summary name) or the op, and only where its input
// was finite: the first place, not everything downstream of it. Off, a check costs one relaxed
// atomic load.
#pragma once

#include <stdexcept>
#include <string>

#include "tensor/tensor.h"

namespace mlai::autograd {

class AnomalyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// forward: module outputs; backward: gradients (off under fp16 loss scaling, where an inf
// gradient is the scaler's business: it skips the step and lowers the scale).
void set_detect_anomaly(bool forward, bool backward);
bool anomaly_forward();
bool anomaly_backward();

// Whether every value of a floating-point tensor is finite (integer tensors: always).
bool all_finite(const tensor::Tensor& t);

}  // namespace mlai::autograd
