// CPU 2-D convolution (NHWC input, OHWI filters): im2col into a patch matrix, a chunk of images
// at a time so the patch buffer stays under kPatchBytes (4 MB), then one GEMM per chunk (gemm.cpp
// splits it over the kernel threads). im2col and col2im run on the kernel threads too
// (kernels/parallel.h). A 1x1, stride-1, unpadded convolution is already a GEMM on x seen as
// [rows, c_in]; 3x3 stride-1 ones with enough channels go to winograd.cpp instead, and narrow
// float ones to the direct kernels (conv_direct.cpp). Grouped convolutions run one GEMM per
// group on the same patches (columns ordered group by group); depthwise ones go to
// conv_depthwise.cpp.
#include "kernels/conv.h"

#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {

// Small enough that a chunk's patches are still in cache when the GEMM reads them: on a 2-core
// EPYC (32 MB L3), ResNet-18's 3x3 64->64 conv at 32x32, batch 16, runs forward + both
// backwards in ~45 ms with 4 MB chunks (one image), ~70 ms with 32 MB and ~140 ms with 64 MB.
constexpr int64_t kPatchBytes = int64_t{4} << 20;

int64_t patch_cols(const Conv2dGeometry& g) { return g.kh * g.kw * g.c_in; }

bool is_pointwise(const Conv2dGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
}

// Images per chunk: as many as fit in kPatchBytes, at least one.
template <class T>
int64_t images_per_chunk(const Conv2dGeometry& g) {
  const int64_t per_image = g.out_h() * g.out_w() * patch_cols(g) * int64_t{sizeof(T)};
  return std::max<int64_t>(1, kPatchBytes / std::max<int64_t>(1, per_image));
}

// im2col: patch row q of the chunk (an output pixel of images n0..) holds the input pixels under
// each filter tap, zeros in the padding, group by group: column (gi * kh * kw + tap) * cg + ci
// is channel gi * cg + ci under that tap (with one group, the c_in-wide pixels tap by tap), so a
// group's patch is a block of adjacent columns for its GEMM. Blocks of output rows (image, oy)
// run on the kernel threads; each writes only its own patch rows.
template <class T>
void im2col(const T* x, T* patches, const Conv2dGeometry& g, int64_t n0, int64_t count) {
  const int64_t oh = g.out_h(), ow = g.out_w(), k = patch_cols(g);
  const int64_t cg = g.group_in(), taps = g.kh * g.kw;
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(1, ow * k));
  parallel_for(count * oh, grain, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = n0 + q / oh, oy = q % oh;
      for (int64_t ox = 0; ox < ow; ++ox) {
        T* row = patches + (q * ow + ox) * k;
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t iy = oy * g.stride - g.pad + i;
          for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
            const T* src = inside ? x + ((b * g.h + iy) * g.w + ix) * g.c_in : nullptr;
            T* dst = row + (i * g.kw + j) * cg;
            for (int64_t gi = 0; gi < g.groups; ++gi, dst += taps * cg) {
              if (inside)
                std::copy_n(src + gi * cg, cg, dst);
              else
                std::fill_n(dst, cg, T(0));
            }
          }
        }
      }
    }
  });
}

// The adjoint of im2col: every patch entry is added back into the input pixel it came from.
// Neighbouring output pixels share input pixels, so the threads split the input rows instead:
// a block of rows (image, iy) walks the output rows whose taps reach it and adds only into its
// own rows. Each pixel still receives its contributions in the serial order (oy, ox, i, j), so
// the sums have the same bits for any thread count.
template <class T>
void col2im(const T* patches, T* dx, const Conv2dGeometry& g, int64_t n0, int64_t count) {
  const int64_t oh = g.out_h(), ow = g.out_w(), k = patch_cols(g);
  const int64_t cg = g.group_in(), taps = g.kh * g.kw;
  const int64_t grain = std::max<int64_t>(1, kElementGrain / std::max<int64_t>(1, g.w * g.c_in));
  parallel_for(count * g.h, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1;) {
      const int64_t b = t / g.h, y0 = t % g.h, y1 = std::min(g.h, y0 + (t1 - t));
      // Output rows with a tap in [y0, y1): oy * stride - pad + i there for some i < kh.
      const int64_t lo = y0 + g.pad - (g.kh - 1);
      const int64_t oy_lo = lo <= 0 ? 0 : (lo + g.stride - 1) / g.stride;
      const int64_t oy_hi = std::min(oh - 1, (y1 - 1 + g.pad) / g.stride);
      for (int64_t oy = oy_lo; oy <= oy_hi; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const T* row = patches + ((b * oh + oy) * ow + ox) * k;
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t iy = oy * g.stride - g.pad + i;
            if (iy < y0 || iy >= y1) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t ix = ox * g.stride - g.pad + j;
              if (ix < 0 || ix >= g.w) continue;
              T* d = dx + (((n0 + b) * g.h + iy) * g.w + ix) * g.c_in;
              const T* src = row + (i * g.kw + j) * cg;
              for (int64_t gi = 0; gi < g.groups; ++gi, d += cg, src += taps * cg)
                for (int64_t ci = 0; ci < cg; ++ci) d[ci] += src[ci];
            }
          }
        }
      t += y1 - y0;
    }
  });
}

// The direct kernels for this pass (float only): forced where they apply, else kAuto's choice.
// kDirect becomes kAuto for the rest.
template <class T>
bool use_direct(const Conv2dGeometry& g, ConvAlgo& algo, ConvPass pass) {
  if constexpr (!std::is_same_v<T, float>) {
    if (algo == ConvAlgo::kDirect) algo = ConvAlgo::kAuto;
    return false;
  } else {
    if (algo == ConvAlgo::kDirect) {
      algo = ConvAlgo::kAuto;
      return direct_applies(g, pass);
    }
    return algo == ConvAlgo::kAuto && direct_suits(g, pass);
  }
}

// Resolves kAuto, and refuses Winograd where it does not apply.
bool use_winograd(const Conv2dGeometry& g, ConvAlgo algo) {
  if (algo == ConvAlgo::kWinograd && !winograd_applies(g))
    throw std::invalid_argument(
        "conv2d: Winograd F(2x2, 3x3) needs a 3x3 filter, stride 1, "
        "padding 0..2 and one group");
  return algo == ConvAlgo::kWinograd || (algo == ConvAlgo::kAuto && winograd_suits(g));
}

// The products of a convolution seen as GEMMs over rows = (image, output pixel), one per group:
// a group's patch columns (or, for a pointwise convolution, input channels) are the block
// [gi * kg, (gi + 1) * kg) of `k`-wide rows, its outputs the block [gi * og, (gi + 1) * og) of
// the c_out-wide rows of y, and its filters the og x kg matrix at row gi * og of w.
// y (+)= patches . w^T
template <class T>
void gemm_forward(int64_t rows, const T* patches, const T* w, T* y, const Conv2dGeometry& g) {
  const int64_t k = patch_cols(g), kg = k / g.groups, og = g.group_out();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm<T>(false, true, rows, og, kg, 1.0, patches + gi * kg, k, w + gi * og * kg, kg, 0.0,
            y + gi * og, g.c_out);
}
// dpatches = dy . w
template <class T>
void gemm_backward_data(int64_t rows, const T* dy, const T* w, T* dpatches,
                        const Conv2dGeometry& g) {
  const int64_t k = patch_cols(g), kg = k / g.groups, og = g.group_out();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm<T>(false, false, rows, kg, og, 1.0, dy + gi * og, g.c_out, w + gi * og * kg, kg, 0.0,
            dpatches + gi * kg, k);
}
// dw += dy^T . patches
template <class T>
void gemm_backward_filter(int64_t rows, const T* dy, const T* patches, T* dw,
                          const Conv2dGeometry& g) {
  const int64_t k = patch_cols(g), kg = k / g.groups, og = g.group_out();
  for (int64_t gi = 0; gi < g.groups; ++gi)
    gemm<T>(true, false, og, kg, rows, 1.0, dy + gi * og, g.c_out, patches + gi * kg, k, 1.0,
            dw + gi * og * kg, kg);
}

// The depthwise kernel unless im2col is forced (tests compare the two).
bool use_depthwise(const Conv2dGeometry& g, ConvAlgo algo) {
  return g.depthwise() && algo != ConvAlgo::kIm2col;
}

}  // namespace

template <class T>
void conv2d_forward(const T* x, const T* w, const T* bias, T* y, const Conv2dGeometry& g,
                    ConvAlgo algo) {
  const int64_t pixels = g.out_h() * g.out_w(), k = patch_cols(g);
  if (use_depthwise(g, algo)) {
    depthwise_forward(x, w, y, g);
  } else if (use_direct<T>(g, algo, ConvPass::kForward)) {
    if constexpr (std::is_same_v<T, float>) direct_forward(x, w, y, g);
  } else if (use_winograd(g, algo)) {
    winograd_forward(x, w, y, g);
  } else if (is_pointwise(g)) {
    gemm_forward(g.n * pixels, x, w, y, g);
  } else {
    const int64_t chunk = images_per_chunk<T>(g);
    std::vector<T> patches(static_cast<size_t>(std::min(chunk, g.n) * pixels * k));
    for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
      const int64_t count = std::min(chunk, g.n - n0);
      im2col(x, patches.data(), g, n0, count);
      gemm_forward(count * pixels, patches.data(), w, y + n0 * pixels * g.c_out, g);
    }
  }
  if (bias == nullptr) return;
  for (int64_t r = 0; r < g.n * pixels; ++r)
    for (int64_t co = 0; co < g.c_out; ++co) y[r * g.c_out + co] += bias[co];
}

template <class T>
void conv2d_backward_data(const T* dy, const T* w, T* dx, const Conv2dGeometry& g,
                          ConvAlgo algo) {
  const int64_t pixels = g.out_h() * g.out_w(), k = patch_cols(g);
  if (use_depthwise(g, algo)) {
    depthwise_backward_data(dy, w, dx, g);
    return;
  }
  if (use_direct<T>(g, algo, ConvPass::kData)) {
    if constexpr (std::is_same_v<T, float>) direct_backward_data(dy, w, dx, g);
    return;
  }
  if (use_winograd(g, algo)) {
    winograd_backward_data(dy, w, dx, g);
    return;
  }
  if (is_pointwise(g)) {
    gemm_backward_data(g.n * pixels, dy, w, dx, g);
    return;
  }
  parallel_for(g.n * g.h * g.w * g.c_in, kElementGrain,
               [=](int64_t i, int64_t e) { std::fill_n(dx + i, e - i, T(0)); });
  const int64_t chunk = images_per_chunk<T>(g);
  std::vector<T> dpatches(static_cast<size_t>(std::min(chunk, g.n) * pixels * k));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t count = std::min(chunk, g.n - n0);
    gemm_backward_data(count * pixels, dy + n0 * pixels * g.c_out, w, dpatches.data(), g);
    col2im(dpatches.data(), dx, g, n0, count);
  }
}

template <class T>
void conv2d_backward_filter(const T* x, const T* dy, T* dw, T* dbias, const Conv2dGeometry& g,
                            ConvAlgo algo) {
  const int64_t pixels = g.out_h() * g.out_w(), k = patch_cols(g);
  if (dbias != nullptr) {
    std::vector<double> sums(static_cast<size_t>(g.c_out), 0.0);  // double: many rows add up
    for (int64_t r = 0; r < g.n * pixels; ++r)
      for (int64_t co = 0; co < g.c_out; ++co) sums[co] += dy[r * g.c_out + co];
    for (int64_t co = 0; co < g.c_out; ++co) dbias[co] = static_cast<T>(sums[co]);
  }
  if (use_depthwise(g, algo)) {
    depthwise_backward_filter(x, dy, dw, g);
    return;
  }
  if (use_direct<T>(g, algo, ConvPass::kFilter)) {
    if constexpr (std::is_same_v<T, float>) direct_backward_filter(x, dy, dw, g);
    return;
  }
  if (use_winograd(g, algo)) {
    winograd_backward_filter(x, dy, dw, g);
    return;
  }
  std::fill_n(dw, g.c_out * (k / g.groups), T(0));  // then every chunk accumulates (beta = 1)
  if (is_pointwise(g)) {
    gemm_backward_filter(g.n * pixels, dy, x, dw, g);
    return;
  }
  const int64_t chunk = images_per_chunk<T>(g);
  std::vector<T> patches(static_cast<size_t>(std::min(chunk, g.n) * pixels * k));
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t count = std::min(chunk, g.n - n0);
    im2col(x, patches.data(), g, n0, count);
    gemm_backward_filter(count * pixels, dy + n0 * pixels * g.c_out, patches.data(), dw, g);
  }
}

#define MLAI_INSTANTIATE(T)                                                                   \
  template void conv2d_forward<T>(const T*, const T*, const T*, T*, const Conv2dGeometry&,    \
                                  ConvAlgo);                                                  \
  template void conv2d_backward_data<T>(const T*, const T*, T*, const Conv2dGeometry&,        \
                                        ConvAlgo);                                            \
  template void conv2d_backward_filter<T>(const T*, const T*, T*, T*, const Conv2dGeometry&,  \
                                          ConvAlgo);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
