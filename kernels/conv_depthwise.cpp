// Depthwise convolution on the CPU (NHWC, filters [c, kh, kw, 1]): MobileNet's 3x3 layers, where
// im2col would run one GEMM of a single output column per channel. In NHWC a pixel's channels
// are adjacent, so every loop here runs over the channels innermost, against a copy of the
// filter turned to [kh, kw, c]: multiply-adds on blocks of 16 channels held in registers while
// a pixel's taps (or a tap's pixels) are summed, which the compiler vectorises.
//
// Work splits into fixed blocks of rows (image, row), so the threads never change a result:
// forward and backward data each gather their own output pixels' sums, the taps in a fixed
// order, and the filter gradient adds each block's partial sums in block order.
#include <algorithm>
#include <cstring>
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

// The filter gradient keeps a [kh, kw, c] partial sum per block, as large as the block's share
// of the output when it holds a single row of 4 pixels: at most this many blocks, each of at
// least kMinFilterPixels output pixels, so that summing the partials stays a small part.
constexpr int64_t kMaxFilterBlocks = 64;
constexpr int64_t kMinFilterPixels = 64;

// Channels per register block: each output's taps are summed in registers, 16 channels at a
// time, and stored once (instead of a load and a store of the output per tap).
constexpr int64_t kBlock = 16;

// 16 lanes of T as one GCC vector value: the accumulators stay in registers (a plain T[16]
// array was kept on the stack, a store and a reload per multiply-add). Each lane is rounded
// exactly as the scalar loop would (no FMA: -ffp-contract=off).
typedef float FloatBlock __attribute__((vector_size(kBlock * sizeof(float))));
typedef double DoubleBlock __attribute__((vector_size(kBlock * sizeof(double))));
template <class T>
struct BlockOf;
template <>
struct BlockOf<float> {
  using type = FloatBlock;
};
template <>
struct BlockOf<double> {
  using type = DoubleBlock;
};
// acc += a[0, 16) * b[0, 16), lane by lane (no vector passes a function boundary by value: its
// ABI would differ between the AVX-512 and baseline versions).
template <class T>
inline void multiply_add_block(typename BlockOf<T>::type& acc, const T* a, const T* b) {
  typename BlockOf<T>::type va, vb;
  std::memcpy(&va, a, sizeof va);
  std::memcpy(&vb, b, sizeof vb);
  acc += va * vb;
}

// out[i] = sum over the taps t of a[t][offset + i] * b[t][offset + i], i < n (n <= kBlock),
// taps in the order given: a whole block in vector registers, or a shorter tail lane by lane.
template <class T>
inline void sum_taps(T* out, const T* const* a, const T* const* b, int64_t taps, int64_t offset,
                     int64_t n) {
  if (n == kBlock) {
    typename BlockOf<T>::type acc = {};
    for (int64_t t = 0; t < taps; ++t) multiply_add_block(acc, a[t] + offset, b[t] + offset);
    std::memcpy(out, &acc, sizeof acc);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    T acc = 0;
    for (int64_t t = 0; t < taps; ++t) acc += a[t][offset + i] * b[t][offset + i];
    out[i] = acc;
  }
}

// acc[i] += the sum over the pixel pairs p of a[p][offset + i] * b[p][offset + i], i < n: the
// pairs summed apart first, in order, then added.
template <class T>
inline void add_pixel_products(T* acc_out, const T* const* a, const T* const* b, int64_t pairs,
                               int64_t offset, int64_t n) {
  if (n == kBlock) {
    typename BlockOf<T>::type acc = {};
    for (int64_t p = 0; p < pairs; ++p) multiply_add_block(acc, a[p] + offset, b[p] + offset);
    typename BlockOf<T>::type before;
    std::memcpy(&before, acc_out, sizeof before);
    acc += before;
    std::memcpy(acc_out, &acc, sizeof acc);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    T acc = 0;
    for (int64_t p = 0; p < pairs; ++p) acc += a[p][offset + i] * b[p][offset + i];
    acc_out[i] = acc + acc_out[i];
  }
}

// The two loops over all channels, compiled for AVX-512 and AVX2 beside the baseline and chosen
// by the CPU at load time (GCC's target_clones), all inlined into each version. No FMA (mlai
// builds with -ffp-contract=off), so every version gives the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MLAI_DEPTHWISE_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), flatten))
#else
#define MLAI_DEPTHWISE_CLONES
#endif

// out[0, c) = the sum over the taps of a[t][0, c) * b[t][0, c), block by block.
template <class T>
inline void sum_taps_blocks(T* out, const T* const* a, const T* const* b, int64_t taps, int64_t c) {
  int64_t c0 = 0;
  for (; c0 + kBlock <= c; c0 += kBlock) sum_taps(out + c0, a, b, taps, c0, kBlock);
  if (c0 < c) sum_taps(out + c0, a, b, taps, c0, c - c0);
}
MLAI_DEPTHWISE_CLONES void sum_taps_all(float* out, const float* const* a, const float* const* b,
                                        int64_t taps, int64_t c) {
  sum_taps_blocks(out, a, b, taps, c);
}
MLAI_DEPTHWISE_CLONES void sum_taps_all(double* out, const double* const* a, const double* const* b,
                                        int64_t taps, int64_t c) {
  sum_taps_blocks(out, a, b, taps, c);
}

// acc[0, c) += the sum over the pixel pairs of a[p][0, c) * b[p][0, c), block by block.
template <class T>
inline void add_products_blocks(T* acc, const T* const* a, const T* const* b, int64_t pairs,
                                int64_t c) {
  int64_t c0 = 0;
  for (; c0 + kBlock <= c; c0 += kBlock) add_pixel_products(acc + c0, a, b, pairs, c0, kBlock);
  if (c0 < c) add_pixel_products(acc + c0, a, b, pairs, c0, c - c0);
}
MLAI_DEPTHWISE_CLONES void add_products_all(float* acc, const float* const* a,
                                            const float* const* b, int64_t pairs, int64_t c) {
  add_products_blocks(acc, a, b, pairs, c);
}
MLAI_DEPTHWISE_CLONES void add_products_all(double* acc, const double* const* a,
                                            const double* const* b, int64_t pairs, int64_t c) {
  add_products_blocks(acc, a, b, pairs, c);
}

}  // namespace

// y[oy, ox] = sum over the taps (i, j) inside the image of x[iy, ix] * w[i, j], in that order.
template <class T>
void depthwise_forward(const T* x, const T* w, T* y, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in, taps = g.kh * g.kw;
  const std::vector<T> wt = taps_by_channel(w, g);
  parallel_for(g.n * oh, row_grain(ow, c), [&](int64_t r0, int64_t r1) {
    std::vector<const T*> xs(static_cast<size_t>(taps)), ws(static_cast<size_t>(taps));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / oh, oy = r % oh;
      for (int64_t ox = 0; ox < ow; ++ox) {
        int64_t n = 0;
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            xs[n] = x + ((b * g.h + iy) * g.w + ix) * c;
            ws[n++] = wt.data() + (i * g.kw + j) * c;
          }
        }
        sum_taps_all(y + (r * ow + ox) * c, xs.data(), ws.data(), n, c);
      }
    }
  });
}

// dx[iy, ix] = sum over the taps (i, j) that read it (oy * stride = iy + pad - i, and the same
// for x) of dy[oy, ox] * w[i, j], in the order (i, j): each input pixel gathers its own sum.
template <class T>
void depthwise_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in, taps = g.kh * g.kw;
  const std::vector<T> wt = taps_by_channel(w, g);
  parallel_for(g.n * g.h, row_grain(g.w, c), [&](int64_t r0, int64_t r1) {
    std::vector<const T*> ds(static_cast<size_t>(taps)), ws(static_cast<size_t>(taps));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / g.h, iy = r % g.h;
      for (int64_t ix = 0; ix < g.w; ++ix) {
        int64_t n = 0;
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t ny = iy + g.pad - i;  // oy * stride
          if (ny < 0 || ny % g.stride != 0 || ny / g.stride >= oh) continue;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t nx = ix + g.pad - j;
            if (nx < 0 || nx % g.stride != 0 || nx / g.stride >= ow) continue;
            ds[n] = dy + ((b * oh + ny / g.stride) * ow + nx / g.stride) * c;
            ws[n++] = wt.data() + (i * g.kw + j) * c;
          }
        }
        sum_taps_all(dx + (r * g.w + ix) * c, ds.data(), ws.data(), n, c);
      }
    }
  });
}

// dw[c, i, j] = sum over images and output pixels of dy[oy, ox, c] * x[iy, ix, c]: each block of
// output rows sums, tap by tap and 16 channels at a time, into its own [kh, kw, c] partials,
// which are then added in block order (in double for float filters).
template <class T>
void depthwise_backward_filter(const T* x, const T* dy, T* dw, const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), c = g.c_in, taps = g.kh * g.kw;
  const int64_t rows = g.n * oh;
  const int64_t grain = std::max({row_grain(ow * taps, c), num_blocks(rows, kMaxFilterBlocks),
                                  num_blocks(kMinFilterPixels, ow)});
  const int64_t blocks = num_blocks(rows, grain);
  std::vector<T> partial(static_cast<size_t>(blocks * taps * c), T(0));
  parallel_blocks(rows, grain, [&](int64_t blk, int64_t r0, int64_t r1) {
    T* acc = partial.data() + blk * taps * c;
    std::vector<const T*> ds, xs;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        // The (dy, x) pixel pairs of this tap in the block's rows.
        ds.clear();
        xs.clear();
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / oh, oy = r % oh, iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t ox = 0; ox < ow; ++ox) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            ds.push_back(dy + (r * ow + ox) * c);
            xs.push_back(x + ((b * g.h + iy) * g.w + ix) * c);
          }
        }
        add_products_all(acc + (i * g.kw + j) * c, ds.data(), xs.data(),
                         static_cast<int64_t>(ds.size()), c);
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
