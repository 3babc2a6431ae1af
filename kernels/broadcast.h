// Broadcast along one axis, the backward of a reduction: a contiguous tensor seen as
// [outer, dim, inner] gets out[o, d, i] = scale * g[o, i] (g is [outer, inner]).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

namespace cpu {
template <class T>
void broadcast_dim(const T* g, T* out, int64_t outer, int64_t dim, int64_t inner, double scale);
}  // namespace cpu

namespace cuda {
template <class T>
void broadcast_dim(const T* g, T* out, int64_t outer, int64_t dim, int64_t inner, double scale,
                   StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
