// Dropout: keep element i when uniform01(seed, offset + i) >= p and scale it by 1/(1-p); the
// keep mask (uint8) is saved for backward. The same counter-based generator as kernels/fill.h,
// so CPU and GPU drop the same elements for the same seed.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

#define MLAI_DROPOUT_DECLS(...)                                                              \
  template <class T>                                                                         \
  void dropout_forward(const T* x, T* y, uint8_t* mask, int64_t n, double p, uint64_t seed,  \
                       uint64_t offset __VA_ARGS__);                                         \
  /* dx = dy * mask * scale */                                                               \
  template <class T>                                                                         \
  void dropout_backward(const T* dy, const uint8_t* mask, T* dx, int64_t n,                  \
                        double scale __VA_ARGS__);

namespace cpu {
MLAI_DROPOUT_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_DROPOUT_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_DROPOUT_DECLS

}  // namespace mlai::kernels
