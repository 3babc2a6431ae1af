// The ModelSpec of the model tests: square images of hw pixels and c channels.
#pragma once

#include <cstdint>

#include "nn/models.h"

namespace mlai::nn::test {

inline ModelSpec image_spec(int64_t hw, int64_t c, int classes, uint64_t seed) {
  ModelSpec s;
  s.height = s.width = hw;
  s.channels = c;
  s.num_classes = classes;
  s.seed = seed;
  return s;
}

}  // namespace mlai::nn::test
