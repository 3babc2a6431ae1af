// Depthwise convolution on the CPU (NHWC, filters [c, kh, kw, 1]): MobileNet's 3x3 layers, where
// im2col would run one GEMM of a single output column per channel. In NHWC a pixel's channels
// are adjacent, so every loop here runs over the channels innermost, against a copy of the
// filter turned to [kh, kw, c]: plain multiply-adds the compiler vectorises.
//
// Work splits into fixed blocks of rows (image, row), so the threads never change a result:
// forward and backward data each write their own output rows, summing the taps in a fixed
// order, and the filter gradient adds each block's partial sums in block order.
#include <algorithm>
#include <vector>

#include "kernels/conv.h"
#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {

// w [c, kh, kw] -> [kh, kw, c].
template <class T>
std::vector<T> taps_by_channel(const T* w, const Conv2dGeometry& g) {
  const int64_t taps = g.kh * g.kw;
  std::vector<T> t(static_cast<size_t>(taps * g.c_in));
  for (int64_t c = 0; c < g.c_in; ++c)
    for (int64_t k = 0; k < taps; ++k) t[static_cast<size_t>(k * g.c_in + c)] = w[c * taps + k];
  return t;
}

// Rows of `width` channel-wide pixels per block: about kElementGrain values, at least one row.
int64_t row_grain(int64_t width, int64_t c) {
  return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(1, width * c));
}

// The filter gradient keeps a [kh, kw, c] partial sum per block: at most this many blocks.
constexpr int64_t kMaxFilterBlocks = 256;

template <class T>
inline void multiply_add(T* __restrict out, const T* __restrict a, const T* __restrict b,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a[i] * b[i];
}

}  // namespace

template <class T>
void depthwise_forward(const T* x, const T* w, T* y, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in;
  const std::vector<T> wt = taps_by_channel(w, g);
  parallel_for(g.n * oh, row_grain(ow, c), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / oh, oy = r % oh;
      for (int64_t ox = 0; ox < ow; ++ox) {
        T* out = y + (r * ow + ox) * c;
        std::fill_n(out, c, T(0));
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            multiply_add(out, x + ((b * g.h + iy) * g.w + ix) * c, wt.data() + (i * g.kw + j) * c,
                         c);
          }
        }
      }
    }
  });
}

// dx[iy, ix] = sum over the taps (i, j) that read it of dy[oy, ox] * w[i, j], in the order i,
// ox, j: a block of input rows gathers from the output rows whose taps reach it.
template <class T>
void depthwise_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in;
  const std::vector<T> wt = taps_by_channel(w, g);
  parallel_for(g.n * g.h, row_grain(g.w, c), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / g.h, iy = r % g.h;
      T* row = dx + r * g.w * c;
      std::fill_n(row, g.w * c, T(0));
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t num = iy + g.pad - i;  // oy * stride
        if (num < 0 || num % g.stride != 0 || num / g.stride >= oh) continue;
        const T* dy_row = dy + (b * oh + num / g.stride) * ow * c;
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            multiply_add(row + ix * c, dy_row + ox * c, wt.data() + (i * g.kw + j) * c, c);
          }
      }
    }
  });
}

// dw[c, i, j] = sum over images and output pixels of dy[oy, ox, c] * x[iy, ix, c]: each block of
// output rows sums into its own [kh, kw, c] partials, which are then added in block order (in
// double for float filters).
template <class T>
void depthwise_backward_filter(const T* x, const T* dy, T* dw, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in, taps = g.kh * g.kw;
  const int64_t rows = g.n * oh;
  const int64_t grain = std::max(row_grain(ow * taps, c), num_blocks(rows, kMaxFilterBlocks));
  const int64_t blocks = num_blocks(rows, grain);
  std::vector<T> partial(static_cast<size_t>(blocks * taps * c), T(0));
  parallel_blocks(rows, grain, [&](int64_t blk, int64_t r0, int64_t r1) {
    T* acc = partial.data() + blk * taps * c;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / oh, oy = r % oh;
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t iy = oy * g.stride - g.pad + i;
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t ox = 0; ox < ow; ++ox) {
          const T* d = dy + (r * ow + ox) * c;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            multiply_add(acc + (i * g.kw + j) * c, d, x + ((b * g.h + iy) * g.w + ix) * c, c);
          }
        }
      }
    }
  });
  parallel_for(taps * c, kElementGrain / std::max<int64_t>(1, blocks) + 1,
               [&](int64_t e0, int64_t e1) {
                 for (int64_t e = e0; e < e1; ++e) {
                   double sum = 0;
                   for (int64_t blk = 0; blk < blocks; ++blk)
                     sum += static_cast<double>(partial[static_cast<size_t>(blk * taps * c + e)]);
                   const int64_t k = e / c, ch = e % c;
                   dw[ch * taps + k] = static_cast<T>(sum);
                 }
               });
}

#define MLAI_INSTANTIATE(T)                                                                \
  template void depthwise_forward<T>(const T*, const T*, T*, const Conv2dGeometry&);       \
  template void depthwise_backward_data<T>(const T*, const T*, T*, const Conv2dGeometry&); \
  template void depthwise_backward_filter<T>(const T*, const T*, T*, const Conv2dGeometry&);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
