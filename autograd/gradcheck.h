// Finite-difference gradient check in float64 on the CPU. The function's output is reduced to
// a scalar with fixed random weights, L = sum(w * f(x)), so every output element contributes;
// dL/dx from backward is compared with central differences (L(x+eps) - L(x-eps)) / 2eps.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace mlai::autograd {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string message;  // the worst element when !ok: input, index, analytic, numeric
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;
};

using GradcheckFn = std::function<Variable(const std::vector<Variable>&)>;

// inputs: float64 CPU tensors; each becomes a leaf that requires grad.
GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opt = {});

}  // namespace mlai::autograd
