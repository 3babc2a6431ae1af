// Max pooling on NHWC images (PyTorch semantics: padding counts as -inf, the first maximum in
// the window wins, nan propagates), with the argmax saved for backward as the flat input index.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

struct Pool2dGeometry {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t k = 3, stride = 2, pad = 1;
  int64_t out_h() const { return (h + 2 * pad - k) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - k) / stride + 1; }
};

namespace cpu {
template <class T>
void maxpool2d_forward(const T* x, T* y, int64_t* argmax, const Pool2dGeometry& g);
// dx = 0, then dx[argmax[i]] += dy[i].
template <class T>
void maxpool2d_backward(const T* dy, const int64_t* argmax, T* dx, const Pool2dGeometry& g);
}  // namespace cpu

}  // namespace mlai::kernels
