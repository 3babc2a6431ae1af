// Activation checkpointing (torch.utils.checkpoint): a segment of the network runs forward
// without keeping its intermediate results for backward; its backward runs the segment again
// from its saved input and backpropagates through that. Memory for the segment's activations
// is traded for one more forward pass of it.
#pragma once

#include <functional>

#include "autograd/variable.h"

namespace mlai::autograd {

struct RecomputeHooks {
  // Around the recomputation in backward: a caller restores the random state the forward pass
  // drew from (dropout) and stops batch norm from updating its running statistics a second
  // time; and undoes both after.
  std::function<void()> before, after;
};

// out = fn(x), recorded as one node. fn runs once recorded (to find the leaves it uses: the
// parameters, or their fp16 working copies, that require gradients) and that graph is dropped;
// only x's tensor is kept. backward re-runs fn on it, backpropagates the incoming gradient
// through the new graph, and returns the gradients of x and of those leaves, which the outer
// backward accumulates and whose gradient-ready hooks it fires as for any other node (the data-
// parallel reducer sees nothing different). fn must compute the same values when run again:
// deterministic ops, with hooks.before restoring any random state. The recomputation's matrix
// products are left out of flop_count(), so throughput and MFU stay the model's.
Variable checkpoint(const std::function<Variable(const Variable&)>& fn, const Variable& x,
                    RecomputeHooks hooks = {});

}  // namespace mlai::autograd
