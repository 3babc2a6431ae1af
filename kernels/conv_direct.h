// Direct convolution on the CPU for narrow layers (float, NHWC, output channels in multiples of
// 16): each output pixel's 16-channel slice is one AVX-512 register (two AVX2 ones), and a block
// of pixels is computed as broadcast-input x filter-vector fused multiply-adds, with no patch
// matrix and no transforms. Where a ResNet has 16 to 64 channels (resnet20's whole network) the
// im2col and Winograd GEMMs are thin (K or N of 16) and OpenBLAS runs them far below its peak;
// this does not. The kernels are compiled twice, for AVX-512 and for AVX2 + FMA
// (conv_direct_avx512.cpp, conv_direct_avx2.cpp), and the CPU's best is chosen at run time; a CPU
// with neither uses the other algorithms. Both give the same bits: each output is the same
// sequence of fused multiply-adds in the same order, whatever the vector width, pixel blocking or
// thread count.
//
// This header is the interface between conv.cpp's dispatch (conv_direct.cpp) and the two
// compiled kernels; nothing else includes it.
#pragma once

#include <cstdint>

namespace mlai::kernels::cpu::direct {

// y[b, oy, ox, o] = sum over i, j, c of x[b, oy*s - pad + i, ox*s - pad + j, c] * wt[i, j, c, o]
// (taps outside the image read `zeros`, ci of them): a forward convolution with the filter
// repacked HWIO, so the output channels are contiguous. co % 16 == 0, k <= 11.
struct Forward {
  const float* x = nullptr;
  const float* wt = nullptr;
  float* y = nullptr;
  int64_t n = 0, h = 0, w = 0, ci = 0, co = 0, k = 0, stride = 1, pad = 0, oh = 0, ow = 0;
  const float* zeros = nullptr;
};

// dwt[i, j, c, o] = sum over images [n0, n1) and output pixels of
// dy[b, oy, ox, o] * x[b, oy*s - pad + i, ox*s - pad + j, c] (stored, not added). co % 16 == 0.
struct Filter {
  const float* x = nullptr;
  const float* dy = nullptr;
  int64_t n = 0, h = 0, w = 0, ci = 0, co = 0, k = 0, stride = 1, pad = 0, oh = 0, ow = 0;
};

// Output rows r = b * oh + oy in [r0, r1).
void forward_rows_avx512(const Forward& a, int64_t r0, int64_t r1);
void forward_rows_avx2(const Forward& a, int64_t r0, int64_t r1);
// Images [n0, n1) into dwt ([k, k, ci, co]).
void filter_images_avx512(const Filter& a, int64_t n0, int64_t n1, float* dwt);
void filter_images_avx2(const Filter& a, int64_t n0, int64_t n1, float* dwt);
// Wide layers: tasks [t0, t1) of k * k * (co / 16) (a tap and 16 output channels each, over
// every image), written straight into dwt.
void filter_taps_avx512(const Filter& a, int64_t t0, int64_t t1, float* dwt);
void filter_taps_avx2(const Filter& a, int64_t t0, int64_t t1, float* dwt);

}  // namespace mlai::kernels::cpu::direct
