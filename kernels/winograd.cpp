// Winograd's minimal filtering F(2x2, 3x3) for the CPU's 3x3 stride-1 convolutions (Lavin and
// Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). The output is cut into 2x2
// tiles; each reads a 4x4 input tile. With the transforms
//   V = B^T d B (input tile, 4x4),  U = G g G^T (filter, 4x4),  Y = A^T M A (output tile, 2x2),
// the convolution is M = sum over input channels of U (.) V, elementwise in the 16 positions,
// i.e. 16 GEMMs M_xi[tiles, c_out] = V_xi[tiles, c_in] * U_xi[c_in, c_out]: 16 multiplies per
// 4 outputs and channel pair instead of 36, and no 9x patch matrix.
// Backward data is the same convolution of dy with the filter rotated by 180 degrees and its
// channels swapped, padded 2 - pad. Backward filter follows from the same identity:
//   dU_xi[c_out, c_in] = sum over tiles of (A dY A^T)_xi^T V_xi,  dg = G^T dU G.
// The transforms run on the kernel threads, tile by tile, vectorised over channels (NHWC keeps
// each pixel's channels contiguous); the GEMMs are OpenBLAS's. Images are processed in chunks
// that keep the transformed tiles near kChunkBytes.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"

namespace mlai::kernels {

bool winograd_applies(const Conv2dGeometry& g) {
  return g.groups == 1 && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad >= 0 && g.pad <= 2 &&
         g.out_h() >= 1 && g.out_w() >= 1;
}

namespace {
// kAuto's choice for the process: MLAI_CPU_CONV=im2col|winograd at start, set_cpu_conv_algo
// later (kAuto: by shape).
std::atomic<int>& conv_choice() {
  static std::atomic<int> choice = [] {
    const char* e = std::getenv("MLAI_CPU_CONV");
    const std::string v = e != nullptr ? e : "";
    return static_cast<int>(v == "im2col"     ? ConvAlgo::kIm2col
                            : v == "winograd" ? ConvAlgo::kWinograd
                            : v == "direct"   ? ConvAlgo::kDirect
                                              : ConvAlgo::kAuto);
  }();
  return choice;
}
}  // namespace

void set_cpu_conv_algo(ConvAlgo algo) { conv_choice().store(static_cast<int>(algo)); }

ConvAlgo cpu_conv_choice() { return static_cast<ConvAlgo>(conv_choice().load()); }

bool winograd_suits(const Conv2dGeometry& g) {
  const auto forced = static_cast<ConvAlgo>(conv_choice().load());
  // (kDirect: Winograd by shape where the direct kernels do not apply)
  if (forced == ConvAlgo::kIm2col) return false;
  if (forced == ConvAlgo::kWinograd) return winograd_applies(g);
  // Where it measured as fast or faster on the 2-core EPYC VM
  // (bench/results/2026-11-27-cpu-winograd.md): ResNet's stages down to 4x4. With few channels
  // the transforms cost more than the products save, and below 4x4 most of a tile is padding.
  return winograd_applies(g) && g.c_in >= 16 && g.c_out >= 16 && g.out_h() >= 4 && g.out_w() >= 4;
}

namespace cpu {

namespace {

// The transformed tiles of a chunk: V and M together about this size, so that they are still
// in cache when the GEMMs and the output transform read them. On the 2-core EPYC VM 4 MB ran
// ResNet's 32x32x64 and 16x16x128 passes 10-25% faster than 16 MB and 2 MB.
constexpr int64_t kChunkBytes = int64_t{4} << 20;

struct Tiling {
  int64_t th, tw;  // tiles per image, down and across
  int64_t per_image() const { return th * tw; }
};

Tiling tiling(const Conv2dGeometry& g) { return {(g.out_h() + 1) / 2, (g.out_w() + 1) / 2}; }

// Per-thread buffers kept between calls: a fresh multi-megabyte vector each call costs page
// faults on every page it touches (the kernel zeroes them), as much as the transforms.
template <class T>
std::vector<T>& scratch(int slot, int64_t size) {
  thread_local std::vector<T> buffers[3];
  std::vector<T>& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < size) b.resize(static_cast<size_t>(size));
  return b;
}

// The 16 independent GEMMs run side by side on the kernel threads, each one single-threaded in
// OpenBLAS, when OpenBLAS is single-threaded (configure_threads leaves it so: the same threads
// then do the transforms and the products). Where OpenBLAS has threads of its own (a program
// that did not call configure_threads), one after another on them: the global thread count is
// never changed here, since another thread may be in a product.
template <class F>
void sixteen_gemms(F&& one) {
  if (blas_threads() != 1) {
    for (int64_t xi = 0; xi < 16; ++xi) one(xi);
    return;
  }
  parallel_for(16, 1, [&](int64_t x0, int64_t x1) {
    for (int64_t xi = x0; xi < x1; ++xi) one(xi);
  });
}

// The transforms work on blocks of channels in local arrays, which the compiler vectorises
// (it cannot across the 16 tile pointers themselves, which might alias the output).
constexpr int64_t kBlock = 16;

// dst[k][0..nb) = src[k][c0..c0+nb), zeros beyond nb (they are computed, never stored).
template <class T, int K>
void load_block(const T* const (&src)[K], int64_t c0, int64_t nb, T (&dst)[K][kBlock]) {
  for (int k = 0; k < K; ++k) {
    std::copy_n(src[k] + c0, nb, dst[k]);
    std::fill(dst[k] + nb, dst[k] + kBlock, T(0));
  }
}

// out[k * plane + 0..nb) = src[k][0..nb).
template <class T>
void store_block(const T (&src)[16][kBlock], T* out, int64_t plane, int64_t nb) {
  for (int k = 0; k < 16; ++k) std::copy_n(src[k], nb, out + k * plane);
}

template <class T>
int64_t images_per_chunk(const Conv2dGeometry& g, int64_t row_values) {
  const int64_t per_image = tiling(g).per_image() * 16 * row_values * int64_t{sizeof(T)};
  return std::max<int64_t>(1, kChunkBytes / std::max<int64_t>(1, per_image));
}

// V[xi][t][c] = (B^T d B)[xi] for the chunk's tiles t (images n0..n0+count), d the 4x4 input
// tile of channel c (zeros outside the image). B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
template <class T>
void input_transform(const T* x, T* v, const Conv2dGeometry& g, int64_t n0, int64_t count,
                     const T* zeros) {
  const Tiling tl = tiling(g);
  const int64_t tiles = count * tl.per_image(), c = g.c_in, plane = tiles * c;
  const int64_t grain = std::max<int64_t>(1, kElementGrain / (16 * c));
  parallel_for(tiles, grain, [&](int64_t t0, int64_t t1) {
    const T* src[16];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = n0 + t / tl.per_image(), r = t % tl.per_image();
      const int64_t y0 = 2 * (r / tl.tw) - g.pad, x0 = 2 * (r % tl.tw) - g.pad;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const int64_t iy = y0 + i, ix = x0 + j;
          src[i * 4 + j] = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w
                               ? x + ((b * g.h + iy) * g.w + ix) * c
                               : zeros;
        }
      T* out = v + t * c;
      for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
        const int64_t nb = std::min(kBlock, c - c0);
        T d[16][kBlock], o[16][kBlock];
        load_block(src, c0, nb, d);
        for (int64_t q = 0; q < kBlock; ++q) {  // channels side by side: vectorised
          T m[16];
          for (int j = 0; j < 4; ++j) {  // B^T d: rows combined
            m[0 * 4 + j] = d[0 * 4 + j][q] - d[2 * 4 + j][q];
            m[1 * 4 + j] = d[1 * 4 + j][q] + d[2 * 4 + j][q];
            m[2 * 4 + j] = d[2 * 4 + j][q] - d[1 * 4 + j][q];
            m[3 * 4 + j] = d[1 * 4 + j][q] - d[3 * 4 + j][q];
          }
          for (int i = 0; i < 4; ++i) {  // (B^T d) B: columns combined
            o[i * 4 + 0][q] = m[i * 4 + 0] - m[i * 4 + 2];
            o[i * 4 + 1][q] = m[i * 4 + 1] + m[i * 4 + 2];
            o[i * 4 + 2][q] = m[i * 4 + 2] - m[i * 4 + 1];
            o[i * 4 + 3][q] = m[i * 4 + 1] - m[i * 4 + 3];
          }
        }
        store_block(o, out + c0, plane, nb);
      }
    }
  });
}

// U[xi][co][ci] = (G g G^T)[xi] for the OHWI filter w ([c_out][3][3][c_in]),
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
// flip: of the filter rotated by 180 degrees (tap k read from tap 8 - k), still in the
// [xi][co][ci] layout: backward data's filter, used untransposed.
template <class T>
void filter_transform(const T* w, T* u, int64_t c_out, int64_t c_in, bool flip) {
  const int64_t plane = c_out * c_in;
  parallel_for(c_out, std::max<int64_t>(1, kElementGrain / (16 * c_in)),
               [&](int64_t o0, int64_t o1) {
                 for (int64_t co = o0; co < o1; ++co) {
                   const T* g = w + co * 9 * c_in;
                   T* out = u + co * c_in;
                   for (int64_t ci = 0; ci < c_in; ++ci) {
                     T f[9], m[12];
                     for (int k = 0; k < 9; ++k) f[k] = g[(flip ? 8 - k : k) * c_in + ci];
                     for (int j = 0; j < 3; ++j) {  // G g: 4x3
                       m[0 * 3 + j] = f[0 * 3 + j];
                       m[1 * 3 + j] = T(0.5) * (f[0 * 3 + j] + f[1 * 3 + j] + f[2 * 3 + j]);
                       m[2 * 3 + j] = T(0.5) * (f[0 * 3 + j] - f[1 * 3 + j] + f[2 * 3 + j]);
                       m[3 * 3 + j] = f[2 * 3 + j];
                     }
                     for (int i = 0; i < 4; ++i) {  // (G g) G^T: 4x4
                       const T a = m[i * 3 + 0], b = m[i * 3 + 1], c = m[i * 3 + 2];
                       out[(i * 4 + 0) * plane + ci] = a;
                       out[(i * 4 + 1) * plane + ci] = T(0.5) * (a + b + c);
                       out[(i * 4 + 2) * plane + ci] = T(0.5) * (a - b + c);
                       out[(i * 4 + 3) * plane + ci] = c;
                     }
                   }
                 }
               });
}

// The chunk's output tiles t (images n0..n0+count) on the kernel threads: fn(t, corner, down,
// right), corner the offset of the tile's top-left pixel in an NHWC output of c_out channels,
// down/right whether its second row/column lies inside the output.
template <class F>
void for_each_output_tile(const Conv2dGeometry& g, int64_t n0, int64_t count, F&& fn) {
  const Tiling tl = tiling(g);
  const int64_t oh = g.out_h(), ow = g.out_w();
  const int64_t grain = std::max<int64_t>(1, kElementGrain / (16 * g.c_out));
  parallel_for(count * tl.per_image(), grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = n0 + t / tl.per_image(), r = t % tl.per_image();
      const int64_t oy = 2 * (r / tl.tw), ox = 2 * (r % tl.tw);
      fn(t, ((b * oh + oy) * ow + ox) * g.c_out, oy + 1 < oh, ox + 1 < ow);
    }
  });
}

// y's 2x2 output tiles from M[xi][t][co]: A^T M A, A^T = [1 1 1 0; 0 1 -1 -1]; the tiles'
// cells beyond the output's edge are dropped.
template <class T>
void output_transform(const T* m, T* y, const Conv2dGeometry& g, int64_t n0, int64_t count) {
  const int64_t ow = g.out_w(), c = g.c_out, plane = count * tiling(g).per_image() * c;
  for_each_output_tile(g, n0, count, [&](int64_t t, int64_t corner, bool down, bool right) {
    T* o00 = y + corner;
    T* o01 = right ? o00 + c : nullptr;  // (pointers past the output only where it goes on)
    T* o10 = down ? o00 + ow * c : nullptr;
    T* o11 = down && right ? o10 + c : nullptr;
    const T* in[16];
    for (int k = 0; k < 16; ++k) in[k] = m + k * plane + t * c;
    for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
      const int64_t nb = std::min(kBlock, c - c0);
      T s[16][kBlock], o[4][kBlock];
      load_block(in, c0, nb, s);
      for (int64_t q = 0; q < kBlock; ++q) {
        T a[8];
        for (int j = 0; j < 4; ++j) {  // A^T M: 2x4
          a[0 * 4 + j] = s[0 * 4 + j][q] + s[1 * 4 + j][q] + s[2 * 4 + j][q];
          a[1 * 4 + j] = s[1 * 4 + j][q] - s[2 * 4 + j][q] - s[3 * 4 + j][q];
        }
        o[0][q] = a[0] + a[1] + a[2];
        o[1][q] = a[1] - a[2] - a[3];
        o[2][q] = a[4] + a[5] + a[6];
        o[3][q] = a[5] - a[6] - a[7];
      }
      std::copy_n(o[0], nb, o00 + c0);
      if (right) std::copy_n(o[1], nb, o01 + c0);
      if (down) std::copy_n(o[2], nb, o10 + c0);
      if (down && right) std::copy_n(o[3], nb, o11 + c0);
    }
  });
}

// Mg[xi][t][co] = (A dY A^T)[xi] of the chunk's 2x2 tiles of dy (zeros beyond the output's
// edge), A = [1 0; 1 1; 1 -1; 0 -1].
template <class T>
void grad_output_transform(const T* dy, T* mg, const Conv2dGeometry& g, int64_t n0, int64_t count,
                           const T* zeros) {
  const int64_t ow = g.out_w(), c = g.c_out, plane = count * tiling(g).per_image() * c;
  for_each_output_tile(g, n0, count, [&](int64_t t, int64_t corner, bool down, bool right) {
    const T* e00 = dy + corner;
    const T* e01 = right ? e00 + c : zeros;
    const T* e10 = down ? e00 + ow * c : zeros;
    const T* e11 = down && right ? e00 + (ow + 1) * c : zeros;
    T* out = mg + t * c;
    const T* e[4] = {e00, e01, e10, e11};
    for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
      const int64_t nb = std::min(kBlock, c - c0);
      T d[4][kBlock], o[16][kBlock];
      load_block(e, c0, nb, d);
      for (int64_t q = 0; q < kBlock; ++q) {
        const T a = d[0][q], b2 = d[1][q], c2 = d[2][q], dd = d[3][q];
        // A e: rows (e0), (e0 + e1), (e0 - e1), (-e1) of the 2x2 tile's rows e0 = (a b2),
        // e1 = (c2 dd); then each row r -> (r0, r0 + r1, r0 - r1, -r1).
        const T r[8] = {a, b2, a + c2, b2 + dd, a - c2, b2 - dd, -c2, -dd};
        for (int i = 0; i < 4; ++i) {
          o[i * 4 + 0][q] = r[i * 2];
          o[i * 4 + 1][q] = r[i * 2] + r[i * 2 + 1];
          o[i * 4 + 2][q] = r[i * 2] - r[i * 2 + 1];
          o[i * 4 + 3][q] = -r[i * 2 + 1];
        }
      }
      store_block(o, out + c0, plane, nb);
    }
  });
}

}  // namespace

namespace {

// The convolution from transformed filters u: [xi][c_out][c_in] when out_by_in (forward), or
// [xi][c_in][c_out] (backward data's rotated filter, in the original's order).
template <class T>
void winograd_with(const T* x, const T* u, bool out_by_in, T* y, const Conv2dGeometry& g) {
  const int64_t per_image = tiling(g).per_image();
  const int64_t chunk = std::min(g.n, images_per_chunk<T>(g, g.c_in + g.c_out));
  std::vector<T>& v = scratch<T>(1, 16 * chunk * per_image * g.c_in);
  std::vector<T>& m = scratch<T>(2, 16 * chunk * per_image * g.c_out);
  const std::vector<T> zeros(static_cast<size_t>(g.c_in), T(0));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t count = std::min(chunk, g.n - n0), tiles = count * per_image;
    input_transform(x, v.data(), g, n0, count, zeros.data());
    sixteen_gemms([&](int64_t xi) {
      gemm<T>(false, out_by_in, tiles, g.c_out, g.c_in, 1.0, v.data() + xi * tiles * g.c_in, g.c_in,
              u + xi * g.c_out * g.c_in, out_by_in ? g.c_in : g.c_out, 0.0,
              m.data() + xi * tiles * g.c_out, g.c_out);
    });
    output_transform(m.data(), y, g, n0, count);
  }
}

}  // namespace

template <class T>
void winograd_forward(const T* x, const T* w, T* y, const Conv2dGeometry& g) {
  std::vector<T>& u = scratch<T>(0, 16 * g.c_out * g.c_in);
  filter_transform(w, u.data(), g.c_out, g.c_in, false);
  winograd_with(x, u.data(), true, y, g);
}

template <class T>
void winograd_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g) {
  // dx = conv(dy, w rotated by 180 degrees with in and out swapped), padded 2 - pad, which
  // maps the output's size back to the input's.
  std::vector<T>& u = scratch<T>(0, 16 * g.c_out * g.c_in);
  filter_transform(w, u.data(), g.c_out, g.c_in, true);
  Conv2dGeometry back = g;
  back.h = g.out_h();
  back.w = g.out_w();
  back.c_in = g.c_out;
  back.c_out = g.c_in;
  back.pad = 2 - g.pad;
  winograd_with(dy, u.data(), false, dx, back);
}

template <class T>
void winograd_backward_filter(const T* x, const T* dy, T* dw, const Conv2dGeometry& g) {
  const int64_t per_image = tiling(g).per_image();
  const int64_t chunk = std::min(g.n, images_per_chunk<T>(g, g.c_in + g.c_out));
  std::vector<T> du(static_cast<size_t>(16 * g.c_out * g.c_in), T(0));
  std::vector<T>& v = scratch<T>(1, 16 * chunk * per_image * g.c_in);
  std::vector<T>& mg = scratch<T>(2, 16 * chunk * per_image * g.c_out);
  const std::vector<T> zeros(static_cast<size_t>(std::max(g.c_in, g.c_out)), T(0));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t count = std::min(chunk, g.n - n0), tiles = count * per_image;
    input_transform(x, v.data(), g, n0, count, zeros.data());
    grad_output_transform(dy, mg.data(), g, n0, count, zeros.data());
    sixteen_gemms([&](int64_t xi) {  // dU_xi += Mg_xi^T V_xi
      gemm<T>(true, false, g.c_out, g.c_in, tiles, 1.0, mg.data() + xi * tiles * g.c_out, g.c_out,
              v.data() + xi * tiles * g.c_in, g.c_in, 1.0, du.data() + xi * g.c_out * g.c_in,
              g.c_in);
    });
  }
  // dg = G^T dU G, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1], into OHWI dw.
  const int64_t plane = g.c_out * g.c_in;
  parallel_for(g.c_out, std::max<int64_t>(1, kElementGrain / (16 * g.c_in)),
               [&](int64_t o0, int64_t o1) {
                 for (int64_t co = o0; co < o1; ++co)
                   for (int64_t ci = 0; ci < g.c_in; ++ci) {
                     T s[16], q[12];
                     for (int k = 0; k < 16; ++k) s[k] = du[k * plane + co * g.c_in + ci];
                     for (int j = 0; j < 4; ++j) {  // G^T dU: 3x4
                       q[0 * 4 + j] = s[0 * 4 + j] + T(0.5) * (s[1 * 4 + j] + s[2 * 4 + j]);
                       q[1 * 4 + j] = T(0.5) * (s[1 * 4 + j] - s[2 * 4 + j]);
                       q[2 * 4 + j] = T(0.5) * (s[1 * 4 + j] + s[2 * 4 + j]) + s[3 * 4 + j];
                     }
                     T* out = dw + co * 9 * g.c_in + ci;
                     for (int i = 0; i < 3; ++i) {  // (G^T dU) G: 3x3
                       const T* r = q + i * 4;
                       out[(i * 3 + 0) * g.c_in] = r[0] + T(0.5) * (r[1] + r[2]);
                       out[(i * 3 + 1) * g.c_in] = T(0.5) * (r[1] - r[2]);
                       out[(i * 3 + 2) * g.c_in] = T(0.5) * (r[1] + r[2]) + r[3];
                     }
                   }
               });
}

#define MLAI_INSTANTIATE(T)                                                               \
  template void winograd_forward<T>(const T*, const T*, T*, const Conv2dGeometry&);       \
  template void winograd_backward_data<T>(const T*, const T*, T*, const Conv2dGeometry&); \
  template void winograd_backward_filter<T>(const T*, const T*, T*, const Conv2dGeometry&);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace cpu
}  // namespace mlai::kernels
