// 2-D convolution on NHWC images with OHWI filters ([out_channels, kh, kw, in_channels], the
// layout cuDNN's NHWC tensor-core kernels use; PyTorch's OIHW is permuted on import).
// CPU: im2col into [rows = n*oh*ow, kh*kw*c_in] patches (in chunks of images, to bound memory)
// and OpenBLAS GEMM. CUDA: cuDNN (see tensor/cudnn_ops.h; these raw kernels are the CPU side).
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

struct Conv2dGeometry {
  int64_t n = 0, h = 0, w = 0, c_in = 0;  // input NHWC
  int64_t c_out = 0, kh = 0, kw = 0;      // filter OHWI
  int64_t stride = 1, pad = 0;            // the same in both directions
  int64_t out_h() const { return (h + 2 * pad - kh) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - kw) / stride + 1; }
};

namespace cpu {
// y[n, oh, ow, co] = sum x[n, oh*s - p + i, ow*s - p + j, ci] * w[co, i, j, ci] (+ bias[co]).
// bias may be null. T: float or double.
template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g);
// dx = d(y)/dx applied to dy (overwrites dx).
template <class T>
void conv2d_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g);
// dw = sum over the batch (overwrites dw); dbias (may be null) = sum of dy over n, oh, ow.
template <class T>
void conv2d_backward_filter(const T* x, const T* dy, T* dw, T* dbias, const Conv2dGeometry& g);
}  // namespace cpu

}  // namespace mlai::kernels
