// An identity op that runs a function when backward reaches it: FSDP's hooks around a unit
// (ZeRO stage 3, nn/zero.h). On a unit's output it gathers the unit's parameters before the
// unit's backward reads them; on its input it runs once that backward is done (every node of
// the unit that the input's gradient flows through has run), so the parameters can go again.
#pragma once

#include <functional>

#include "autograd/variable.h"

namespace mlai::autograd {

// x itself, recorded as one node (when x requires a gradient and grad mode is on) whose
// backward calls fn once and passes the incoming gradient on unchanged.
Variable on_backward(const Variable& x, std::function<void()> fn);

}  // namespace mlai::autograd
