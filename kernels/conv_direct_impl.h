// The direct convolution kernels (conv_direct.h), written once over a 16-lane vector type V of
// the instruction set I. Included only by conv_direct_avx512.cpp and conv_direct_avx2.cpp, each
// compiled for its instruction set: everything here is in an unnamed namespace and uses no
// standard-library templates, so no function compiled with those instructions can be shared
// with (and picked by the linker for) code that runs on every CPU.
#pragma once

#include <cstdint>

#include "kernels/conv_direct.h"

namespace mlai::kernels::cpu::direct {
namespace {

inline int64_t lo(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t hi(int64_t a, int64_t b) { return a > b ? a : b; }
// The first q >= 0 with q * s >= v (v may be negative).
inline int64_t first_at_least(int64_t v, int64_t s) { return v <= 0 ? 0 : (v + s - 1) / s; }

// Where each of a block's output pixels reads each tap: a pointer to the tap's input channels,
// or to zeros where the tap falls in the padding. A multiply-add of zero leaves the sum as it
// was, so every pixel runs the same loop (the im2col path multiplies the same zeros).
constexpr int64_t kMaxTaps = 121;  // filters up to 11x11 (direct_applies)

// Output pixels q0 .. q0 + P - 1 in raster order over (image, oy, ox) (a block may span rows),
// output channels [o0, o0 + 16), from their tap pointers taps[t * P + p].
template <class I, int P>
inline void forward_block(const Forward& a, const float* const* taps, int64_t q0, int64_t o0) {
  using V = typename I::V;
  V acc[P];
  for (int p = 0; p < P; ++p) acc[p] = I::zero();
  const int64_t kk = a.k * a.k;
  for (int64_t t = 0; t < kk; ++t) {
    const float* const* tp = taps + t * P;
    const float* wp = a.wt + t * a.ci * a.co + o0;
    for (int64_t c = 0; c < a.ci; ++c) {
      const V wv = I::load(wp + c * a.co);
      for (int p = 0; p < P; ++p) acc[p] = I::fma(I::broadcast(tp[p][c]), wv, acc[p]);
    }
  }
  for (int p = 0; p < P; ++p) I::store(a.y + (q0 + p) * a.co + o0, acc[p]);
}

template <class I, int P>
inline void forward_pixels(const Forward& a, int64_t q0) {
  const float* zeros = a.zeros;
  const float* taps[kMaxTaps * P];
  for (int p = 0; p < P; ++p) {
    const int64_t q = q0 + p, b = q / (a.oh * a.ow), oy = q / a.ow % a.oh, ox = q % a.ow;
    const int64_t y0 = oy * a.stride - a.pad, x0 = ox * a.stride - a.pad;
    for (int64_t i = 0; i < a.k; ++i)
      for (int64_t j = 0; j < a.k; ++j) {
        const int64_t iy = y0 + i, ix = x0 + j;
        taps[(i * a.k + j) * P + p] = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w
                                          ? a.x + ((b * a.h + iy) * a.w + ix) * a.ci
                                          : zeros;
      }
  }
  for (int64_t o0 = 0; o0 < a.co; o0 += 16) forward_block<I, P>(a, taps, q0, o0);
}

// The last pixels of a range, fewer than a block.
template <class I, int R>
inline void forward_rest(const Forward& a, int64_t q0, int64_t left) {
  if constexpr (R > 0) {
    if (left == R) {
      forward_pixels<I, R>(a, q0);
    } else {
      forward_rest<I, R - 1>(a, q0, left);
    }
  }
}

template <class I>
void forward_rows(const Forward& a, int64_t r0, int64_t r1) {
  constexpr int P = I::kPixels;
  int64_t q = r0 * a.ow;
  const int64_t end = r1 * a.ow;
  for (; q + P <= end; q += P) forward_pixels<I, P>(a, q);
  forward_rest<I, P - 1>(a, q, end - q);
}

// The output pixels whose tap (i, j) falls inside the image: rows [y0, y1), columns [x0, x1).
struct TapRange {
  int64_t y0, y1, x0, x1;
};
inline TapRange tap_range(const Filter& a, int64_t i, int64_t j) {
  TapRange r;
  r.y0 = lo(a.oh, first_at_least(a.pad - i, a.stride));
  r.y1 = a.h - 1 + a.pad - i < 0 ? r.y0 : hi(r.y0, lo(a.oh, (a.h - 1 + a.pad - i) / a.stride + 1));
  r.x0 = lo(a.ow, first_at_least(a.pad - j, a.stride));
  r.x1 = a.w - 1 + a.pad - j < 0 ? r.x0 : hi(r.x0, lo(a.ow, (a.w - 1 + a.pad - j) / a.stride + 1));
  return r;
}

// Adds image b's products for tap (i, j), input channels [c0, c0 + C) and output channels
// [o0, o0 + 16) into acc: each output pixel's gradient is loaded once for all C channels.
template <class I, int C>
__attribute__((always_inline)) inline void add_image(const Filter& a, const TapRange& r, int64_t b,
                                                     int64_t i, int64_t j, int64_t c0, int64_t o0,
                                                     typename I::V* acc) {
  for (int64_t oy = r.y0; oy < r.y1; ++oy) {
    const int64_t iy = oy * a.stride - a.pad + i;
    const float* dyp = a.dy + ((b * a.oh + oy) * a.ow + r.x0) * a.co + o0;
    const float* xp = a.x + ((b * a.h + iy) * a.w + r.x0 * a.stride - a.pad + j) * a.ci + c0;
    for (int64_t ox = r.x0; ox < r.x1; ++ox, dyp += a.co, xp += a.stride * a.ci) {
      const typename I::V d = I::load(dyp);
      for (int q = 0; q < C; ++q) acc[q] = I::fma(I::broadcast(xp[q]), d, acc[q]);
    }
  }
}

// Input channels [c0, c0 + C) and output channels [o0, o0 + 16) of tap (i, j), over images
// [n0, n1), into C registers and then dwt.
template <class I, int C>
inline void filter_block(const Filter& a, int64_t n0, int64_t n1, int64_t i, int64_t j, int64_t c0,
                         int64_t o0, float* dwt) {
  typename I::V acc[C];
  for (int q = 0; q < C; ++q) acc[q] = I::zero();
  const TapRange r = tap_range(a, i, j);
  for (int64_t b = n0; b < n1; ++b) add_image<I, C>(a, r, b, i, j, c0, o0, acc);
  for (int q = 0; q < C; ++q) I::store(dwt + ((i * a.k + j) * a.ci + c0 + q) * a.co + o0, acc[q]);
}

template <class I>
void filter_images(const Filter& a, int64_t n0, int64_t n1, float* dwt) {
  constexpr int C = I::kChannels;
  for (int64_t i = 0; i < a.k; ++i)
    for (int64_t j = 0; j < a.k; ++j)
      for (int64_t o0 = 0; o0 < a.co; o0 += 16) {
        int64_t c0 = 0;
        for (; c0 + C <= a.ci; c0 += C) filter_block<I, C>(a, n0, n1, i, j, c0, o0, dwt);
        for (; c0 < a.ci; ++c0) filter_block<I, 1>(a, n0, n1, i, j, c0, o0, dwt);
      }
}

// The same sums for wide layers, where one buffer per block of images would be megabytes: a task
// owns tap t and output channels [o0, o0 + 16) for every input channel, and adds each image into
// them in turn (loading and storing the C sums once per image and channel block).
template <class I, int C>
inline void filter_tap_block(const Filter& a, const TapRange& r, int64_t i, int64_t j, int64_t c0,
                             int64_t o0, int64_t b, float* dwt) {
  typename I::V acc[C];
  float* out = dwt + ((i * a.k + j) * a.ci + c0) * a.co + o0;
  for (int q = 0; q < C; ++q) acc[q] = I::load(out + q * a.co);
  add_image<I, C>(a, r, b, i, j, c0, o0, acc);
  for (int q = 0; q < C; ++q) I::store(out + q * a.co, acc[q]);
}

// Tasks [t0, t1) of k * k * (co / 16): task = tap * (co / 16) + output-channel tile. dwt's
// entries of each task are overwritten.
template <class I>
void filter_taps(const Filter& a, int64_t t0, int64_t t1, float* dwt) {
  constexpr int C = I::kChannels;
  const int64_t tiles = a.co / 16;
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t tap = task / tiles, o0 = task % tiles * 16, i = tap / a.k, j = tap % a.k;
    for (int64_t c = 0; c < a.ci; ++c)
      for (int64_t o = 0; o < 16; ++o) dwt[(tap * a.ci + c) * a.co + o0 + o] = 0.0f;
    const TapRange r = tap_range(a, i, j);
    for (int64_t b = 0; b < a.n; ++b) {
      int64_t c0 = 0;
      for (; c0 + C <= a.ci; c0 += C) filter_tap_block<I, C>(a, r, i, j, c0, o0, b, dwt);
      for (; c0 < a.ci; ++c0) filter_tap_block<I, 1>(a, r, i, j, c0, o0, b, dwt);
    }
  }
}

}  // namespace
}  // namespace mlai::kernels::cpu::direct
