// 2-D convolution on NHWC images with OHWI filters ([out_channels, kh, kw, in_channels / groups],
// the layout cuDNN's NHWC tensor-core kernels use; PyTorch's OIHW is permuted on import).
// Grouped convolutions (ResNeXt) split the channels into `groups` equal parts, each convolved with
// its own c_out / groups filters; depthwise ones (MobileNet: groups = c_in = c_out) have a direct
// kernel of their own on the CPU (conv_depthwise.cpp).
// CPU: im2col into [rows = n*oh*ow, kh*kw*c_in] patches (in chunks of images, to bound memory)
// and OpenBLAS GEMM; 3x3 stride-1 convolutions with 16 or more channels each way (and outputs of
// 4x4 or more) use Winograd's F(2x2, 3x3) instead (kernels/winograd.cpp: 16 GEMMs with 2.25x fewer
// multiplications, no patch matrix), for all three passes. Float layers with output channels in
// sixteens and up to 256 channels each way use direct AVX-512/AVX2 kernels where the CPU has them
// (conv_direct.h), except 3x3 stride-1 layers of 128 channels or more, which stay on Winograd.
// CUDA: cuDNN (see tensor/cudnn_ops.h; these raw kernels are the CPU side).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/common.h"

namespace mlai::kernels {

struct Conv2dGeometry {
  int64_t n = 0, h = 0, w = 0, c_in = 0;  // input NHWC
  int64_t c_out = 0, kh = 0, kw = 0;      // filter OHWI
  int64_t stride = 1, pad = 0;            // the same in both directions
  int64_t groups = 1;                     // divides c_in and c_out
  int64_t group_in() const { return c_in / groups; }
  int64_t group_out() const { return c_out / groups; }
  bool depthwise() const { return groups > 1 && groups == c_in && groups == c_out; }
  int64_t out_h() const { return (h + 2 * pad - kh) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - kw) / stride + 1; }
};

// Which CPU algorithm: kAuto picks the direct kernels or Winograd where they apply and pay
// (direct_suits, winograd_suits), else im2col; the others force one (tests and benchmarks).
// kWinograd needs winograd_applies; kDirect runs the direct kernels where they apply
// (direct_applies) and the kAuto choice elsewhere.
enum class ConvAlgo { kAuto, kIm2col, kWinograd, kDirect };
enum class ConvPass { kForward, kData, kFilter };

// Winograd F(2x2, 3x3) computes this geometry: 3x3, stride 1, padding 0..2, one group.
bool winograd_applies(const Conv2dGeometry& g);
// ... and kAuto uses it: at least 16 channels in and out and a 4x4 output or larger (where it
// measured as fast or faster), unless set_cpu_conv_algo pinned one.
bool winograd_suits(const Conv2dGeometry& g);
// What kAuto means for the whole process from now on: kAuto (by shape, the default; the
// environment's MLAI_CPU_CONV=im2col|winograd sets it at start), or always kIm2col, or
// kWinograd where it applies. Tests that compare runs of different batch sizes pin one, as they
// pin layer fusion: the two round differently, and training amplifies it.
void set_cpu_conv_algo(ConvAlgo algo);
// The process's choice (kAuto unless pinned; MLAI_CPU_CONV=direct gives kDirect).
ConvAlgo cpu_conv_choice();

// The direct kernels compute this pass: one group, float, a CPU with AVX-512 or AVX2 + FMA, a
// square filter, output channels in sixteens; backward data also needs stride 1, padding below the
// filter size and input channels in sixteens.
bool direct_applies(const Conv2dGeometry& g, ConvPass pass);
// ... and kAuto uses them: up to 256 channels in and out, not 1x1 stride 1, and not where
// Winograd suits a layer of 128 channels or more (where they measured faster), unless
// set_cpu_conv_algo pinned an algorithm.
bool direct_suits(const Conv2dGeometry& g, ConvPass pass);
// The instruction set the direct kernels use: "avx512", "avx2", or "" (they are not used).
const char* direct_conv_isa();
// At most this instruction set from now on: "avx512", "avx2" or "none" (tests run both kernels
// on one machine; the CPU's own limit still applies).
void set_direct_conv_isa(const std::string& isa);

namespace cpu {
// y[n, oh, ow, co] = sum x[n, oh*s - p + i, ow*s - p + j, gi * cg + ci] * w[co, i, j, ci]
// (+ bias[co]), with gi = co / (c_out / groups) the output channel's group and cg = c_in / groups.
// bias may be null. T: float or double. Grouped geometries take im2col (with the patch columns
// ordered group by group, one GEMM per group) or, depthwise ones, conv_depthwise.cpp; `algo`
// applies to one group only.
template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g,
                    ConvAlgo algo = ConvAlgo::kAuto);
// dx = d(y)/dx applied to dy (overwrites dx).
template <class T>
void conv2d_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g,
                          ConvAlgo algo = ConvAlgo::kAuto);
// dw = sum over the batch (overwrites dw); dbias (may be null) = sum of dy over n, oh, ow.
template <class T>
void conv2d_backward_filter(const T* x, const T* dy, T* dw, T* dbias, const Conv2dGeometry& g,
                            ConvAlgo algo = ConvAlgo::kAuto);

// Winograd F(2x2, 3x3) (winograd.cpp), for geometries winograd_applies accepts; no bias.
template <class T>
void winograd_forward(const T* x, const T* w, T* y, const Conv2dGeometry& g);
template <class T>
void winograd_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g);
template <class T>
void winograd_backward_filter(const T* x, const T* dy, T* dw, const Conv2dGeometry& g);

// Depthwise convolution (conv_depthwise.cpp; g.depthwise()): each channel with its own kh x kw
// filter w[c, i, j, 0]; no bias. Vectorised over the channels, which NHWC keeps adjacent; the
// filter gradient sums fixed blocks of rows in order, so its bits do not depend on the threads.
template <class T>
void depthwise_forward(const T* x, const T* w, T* y, const Conv2dGeometry& g);
template <class T>
void depthwise_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g);
template <class T>
void depthwise_backward_filter(const T* x, const T* dy, T* dw, const Conv2dGeometry& g);

// The direct kernels (conv_direct.cpp), for geometries direct_applies accepts; no bias.
void direct_forward(const float* x, const float* w, float* y, const Conv2dGeometry& g);
void direct_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g);
void direct_backward_filter(const float* x, const float* dy, float* dw, const Conv2dGeometry& g);
}  // namespace cpu

}  // namespace mlai::kernels
