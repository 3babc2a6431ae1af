// Reductions: sum of all elements, sum along one dimension, max with argmax along one dimension.
// A contiguous tensor is seen as [outer, dim, inner] and reduced over the middle axis, so one
// kernel covers every axis. Results are multiplied by `scale` (1/dim gives a mean).
// Accumulation is in acc_t<T> (double for double, else float).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

#define MLAI_REDUCE_DECLS(...)                                                              \
  /* out[0] = scale * sum(x[0..n)) */                                                       \
  template <class T>                                                                        \
  void sum_all(const T* x, int64_t n, double scale, T* out __VA_ARGS__);                    \
  /* out[o, i] = scale * sum_d x[o, d, i] */                                                \
  template <class T>                                                                        \
  void sum_dim(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner,               \
               double scale __VA_ARGS__);                                                   \
  /* out[o, i] = max_d x[o, d, i]; argmax[o, i] = first d reaching it (nan wins) */         \
  template <class T>                                                                        \
  void max_dim(const T* x, T* out, int64_t* argmax, int64_t outer, int64_t dim, int64_t inner \
                   __VA_ARGS__);

namespace cpu {
MLAI_REDUCE_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_REDUCE_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_REDUCE_DECLS

}  // namespace mlai::kernels
