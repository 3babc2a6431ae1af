// The optimizer kernels' test problems (optim_amp_test.cpp, optim_layerwise_test.cpp): a set of
// parameters with their gradients, working copies and two state tensors, parallel by position.
#pragma once

#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace mlai::tensor {

struct Problem {
  std::vector<Tensor> params, grads, working, s1, s2;
};

// f applied to every tensor of p, in a new problem.
template <class F>
Problem map(const Problem& p, F f) {
  Problem q;
  for (auto [src, dst] : {std::pair{&p.params, &q.params},
                          {&p.grads, &q.grads},
                          {&p.working, &q.working},
                          {&p.s1, &q.s1},
                          {&p.s2, &q.s2}})
    for (const Tensor& t : *src) dst->push_back(f(t));
  return q;
}
inline Problem to(const Problem& p, const Device& d) {
  return map(p, [&](const Tensor& t) { return t.to(d); });
}
inline Problem clone(const Problem& p) {
  return map(p, [](const Tensor& t) { return t.clone(); });
}

}  // namespace mlai::tensor
