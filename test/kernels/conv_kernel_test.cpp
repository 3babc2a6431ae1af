// CPU conv2d kernels (im2col, grouped GEMMs, the depthwise kernel, Winograd, the direct kernels)
// against direct loop references on random data (double: tight, float: ~1e-5 relative).
#include <gtest/gtest.h>

#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "reference_vectors.h"

namespace mlai::kernels {
namespace {

using namespace reference;  // NOLINT(google-build-using-namespace): the shared test helpers

// ---- conv2d ----

std::string describe(const Conv2dGeometry& g) {
  auto d = [](int64_t v) { return std::to_string(v); };
  return "n" + d(g.n) + " " + d(g.h) + "x" + d(g.w) + "x" + d(g.c_in) + " -> " + d(g.c_out) +
         ", k" + d(g.kh) + "x" + d(g.kw) + " s" + d(g.stride) + " p" + d(g.pad) + " g" +
         d(g.groups);
}

struct ConvRef {
  Vec y, dx, dw, dbias;
};

// The definition, one multiply-add per (image, output pixel, out channel, tap, in channel of the
// out channel's group).
ConvRef naive_conv(const Vec& x, const Vec& w, const Vec* bias, const Vec& dy,
                   const Conv2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w(), cg = g.c_in / g.groups, og = g.c_out / g.groups;
  ConvRef r{Vec(g.n * oh * ow * g.c_out, 0.0), Vec(x.size(), 0.0), Vec(w.size(), 0.0),
            Vec(g.c_out, 0.0)};
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox)
        for (int64_t co = 0; co < g.c_out; ++co) {
          const int64_t o = ((b * oh + oy) * ow + ox) * g.c_out + co;
          if (bias != nullptr) r.y[o] += (*bias)[co];
          r.dbias[co] += dy[o];
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j)
              for (int64_t ci = 0; ci < cg; ++ci) {
                const int64_t iy = oy * g.stride - g.pad + i, ix = ox * g.stride - g.pad + j;
                if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
                const int64_t xi = ((b * g.h + iy) * g.w + ix) * g.c_in + (co / og) * cg + ci;
                const int64_t wi = ((co * g.kh + i) * g.kw + j) * cg + ci;
                r.y[o] += x[xi] * w[wi];
                r.dx[xi] += dy[o] * w[wi];
                r.dw[wi] += dy[o] * x[xi];
              }
        }
  return r;
}

template <class T>
void check_conv(const Conv2dGeometry& g, bool with_bias, double tol, uint32_t seed,
                ConvAlgo algo = ConvAlgo::kAuto) {
  const int64_t ny = g.n * g.out_h() * g.out_w() * g.c_out;
  const Vec x = through<T>(random_vec(g.n * g.h * g.w * g.c_in, seed)),
            w = through<T>(random_vec(g.c_out * g.kh * g.kw * g.group_in(), seed + 1)),
            bias = through<T>(random_vec(g.c_out, seed + 2)),
            dy = through<T>(random_vec(ny, seed + 3));
  SCOPED_TRACE(describe(g) + (sizeof(T) == 4 ? " float" : " double") +
               (algo == ConvAlgo::kWinograd ? " winograd"
                : algo == ConvAlgo::kIm2col ? " im2col"
                                            : ""));
  const ConvRef ref = naive_conv(x, w, with_bias ? &bias : nullptr, dy, g);
  // Outputs start as garbage: every kernel must overwrite, not accumulate into, its result.
  std::vector<T> y(ny, T(7)), dx(x.size(), T(7)), dw(w.size(), T(7)), dbias(g.c_out, T(7));
  const auto xt = to<T>(x), wt = to<T>(w), bt = to<T>(bias), dyt = to<T>(dy);
  cpu::conv2d_forward(xt.data(), wt.data(), with_bias ? bt.data() : nullptr, y.data(), g, algo);
  cpu::conv2d_backward_data(dyt.data(), wt.data(), dx.data(), g, algo);
  cpu::conv2d_backward_filter(xt.data(), dyt.data(), dw.data(), with_bias ? dbias.data() : nullptr,
                              g, algo);
  EXPECT_LT(rel_err(widen(y), ref.y), tol) << "forward";
  EXPECT_LT(rel_err(widen(dx), ref.dx), tol) << "backward_data";
  EXPECT_LT(rel_err(widen(dw), ref.dw), tol) << "backward_filter";
  if (with_bias) {
    EXPECT_LT(rel_err(widen(dbias), ref.dbias), tol) << "dbias";
  }
}

const Conv2dGeometry kConvCases[] = {
    {.n = 3, .h = 9, .w = 7, .c_in = 3, .c_out = 5, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 1, .h = 11, .w = 10, .c_in = 4, .c_out = 6, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
    {.n = 3, .h = 15, .w = 13, .c_in = 3, .c_out = 8, .kh = 7, .kw = 7, .stride = 2, .pad = 3},
    {.n = 3, .h = 6, .w = 5, .c_in = 8, .c_out = 4, .kh = 1, .kw = 1, .stride = 1, .pad = 0},
    {.n = 1, .h = 9, .w = 7, .c_in = 6, .c_out = 10, .kh = 1, .kw = 1, .stride = 2, .pad = 0},
    {.n = 3, .h = 5, .w = 8, .c_in = 1, .c_out = 3, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
    {.n = 1, .h = 7, .w = 6, .c_in = 1, .c_out = 2, .kh = 2, .kw = 3, .stride = 2, .pad = 1},
};

TEST(ConvKernel, DoubleAndFloatMatchDirectLoops) {
  for (size_t i = 0; i < std::size(kConvCases); ++i) {
    const auto seed = static_cast<uint32_t>(10 * i);
    check_conv<double>(kConvCases[i], i % 2 == 0, 1e-13, seed);
    check_conv<float>(kConvCases[i], i % 2 == 1, 1e-5, seed + 5);
  }
}

// Grouped convolutions (ResNeXt's, torch's groups): one GEMM per group on patch columns ordered
// group by group, with im2col and without (1x1), with a bias, chunked; and depthwise ones
// (groups = c_in = c_out) through their own kernel (kAuto) and through im2col, at every stride,
// padding and filter size MobileNet and EfficientNet use. A depthwise layer with a channel
// multiplier (c_out = 2 c_in) takes the grouped GEMMs.
TEST(ConvKernel, GroupedAndDepthwiseMatchDirectLoops) {
  const Conv2dGeometry grouped[] = {
      {.n = 2,
       .h = 9,
       .w = 7,
       .c_in = 8,
       .c_out = 12,
       .kh = 3,
       .kw = 3,
       .stride = 1,
       .pad = 1,
       .groups = 4},
      {.n = 3,
       .h = 11,
       .w = 10,
       .c_in = 6,
       .c_out = 4,
       .kh = 3,
       .kw = 3,
       .stride = 2,
       .pad = 1,
       .groups = 2},
      {.n = 2,
       .h = 6,
       .w = 5,
       .c_in = 12,
       .c_out = 9,
       .kh = 1,
       .kw = 1,
       .stride = 1,
       .pad = 0,
       .groups = 3},
      {.n = 1,
       .h = 9,
       .w = 7,
       .c_in = 6,
       .c_out = 6,
       .kh = 1,
       .kw = 1,
       .stride = 2,
       .pad = 0,
       .groups = 3},
      {.n = 2,
       .h = 7,
       .w = 7,
       .c_in = 5,
       .c_out = 10,
       .kh = 3,
       .kw = 3,
       .stride = 1,
       .pad = 1,
       .groups = 5},
      {.n = 5,
       .h = 32,
       .w = 32,
       .c_in = 64,
       .c_out = 64,
       .kh = 3,
       .kw = 3,
       .stride = 1,
       .pad = 1,
       .groups = 32},
  };
  for (size_t i = 0; i < std::size(grouped); ++i) {
    const auto seed = static_cast<uint32_t>(300 + 10 * i);
    check_conv<double>(grouped[i], i % 2 == 0, 1e-13, seed);
    check_conv<float>(grouped[i], i % 2 == 1, 1e-5, seed + 5);
  }
  const Conv2dGeometry depthwise[] = {
      {.n = 2,
       .h = 9,
       .w = 7,
       .c_in = 7,
       .c_out = 7,
       .kh = 3,
       .kw = 3,
       .stride = 1,
       .pad = 1,
       .groups = 7},
      {.n = 3,
       .h = 10,
       .w = 11,
       .c_in = 16,
       .c_out = 16,
       .kh = 3,
       .kw = 3,
       .stride = 2,
       .pad = 1,
       .groups = 16},
      {.n = 2,
       .h = 12,
       .w = 9,
       .c_in = 5,
       .c_out = 5,
       .kh = 5,
       .kw = 5,
       .stride = 2,
       .pad = 2,
       .groups = 5},
      {.n = 1,
       .h = 6,
       .w = 8,
       .c_in = 3,
       .c_out = 3,
       .kh = 3,
       .kw = 3,
       .stride = 1,
       .pad = 0,
       .groups = 3},
      {.n = 2,
       .h = 4,
       .w = 4,
       .c_in = 33,
       .c_out = 33,
       .kh = 3,
       .kw = 3,
       .stride = 3,
       .pad = 2,
       .groups = 33},
  };
  for (size_t i = 0; i < std::size(depthwise); ++i) {
    const auto seed = static_cast<uint32_t>(400 + 10 * i);
    for (ConvAlgo algo : {ConvAlgo::kAuto, ConvAlgo::kIm2col}) {
      check_conv<double>(depthwise[i], i % 2 == 0, 1e-13, seed, algo);
      check_conv<float>(depthwise[i], i % 2 == 1, 1e-5, seed + 5, algo);
    }
  }
}

TEST(ConvKernel, PatchBufferSplitIntoChunksOfImages) {
  // One image's patches are 32*32 * 3*3*24 values: 1.7 MB in double, 0.9 MB in float, so the
  // 4 MB budget runs 5 images as 2 + 2 + 1 (double) and 4 + 1 (float); dw adds up over chunks.
  const Conv2dGeometry g{
      .n = 5, .h = 32, .w = 32, .c_in = 24, .c_out = 4, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
  check_conv<double>(g, true, 1e-13, 99);
  check_conv<float>(g, true, 1e-5, 98);
}

// Winograd F(2x2, 3x3), forced on every 3x3 stride-1 shape (padding 0, 1, 2; odd and even
// output sizes, so edge tiles are cut; one-pixel outputs; few and many channels) and compared
// with the direct loops in all three passes: to ~1e-13 in double, to 1e-5 relative in float
// (the transforms' halves and sums add a few roundings).
TEST(ConvKernel, WinogradMatchesDirectLoops) {
  const Conv2dGeometry cases[] = {
      {.n = 3, .h = 9, .w = 7, .c_in = 3, .c_out = 5, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
      {.n = 2, .h = 8, .w = 8, .c_in = 17, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
      {.n = 2, .h = 6, .w = 9, .c_in = 4, .c_out = 7, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
      {.n = 1, .h = 5, .w = 4, .c_in = 6, .c_out = 3, .kh = 3, .kw = 3, .stride = 1, .pad = 2},
      {.n = 2, .h = 3, .w = 3, .c_in = 5, .c_out = 2, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
      {.n = 2, .h = 1, .w = 2, .c_in = 3, .c_out = 4, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
  };
  for (size_t i = 0; i < std::size(cases); ++i) {
    const auto seed = static_cast<uint32_t>(100 + 10 * i);
    check_conv<double>(cases[i], i % 2 == 0, 1e-13, seed, ConvAlgo::kWinograd);
    check_conv<float>(cases[i], i % 2 == 1, 1e-5, seed + 5, ConvAlgo::kWinograd);
  }
  // Where it does not apply, forcing it is an error, not a wrong result.
  const Conv2dGeometry strided{
      .n = 1, .h = 8, .w = 8, .c_in = 16, .c_out = 16, .kh = 3, .kw = 3, .stride = 2, .pad = 1};
  std::vector<float> buf(8 * 8 * 16 * 16 * 9, 1.0f);
  EXPECT_THROW(cpu::conv2d_forward(buf.data(), buf.data(), static_cast<const float*>(nullptr),
                                   buf.data(), strided, ConvAlgo::kWinograd),
               std::invalid_argument);
  EXPECT_FALSE(winograd_applies(strided));
  EXPECT_TRUE(winograd_suits(cases[1]));
  EXPECT_FALSE(winograd_suits(cases[0]));  // 3 -> 5 channels: im2col
}

// ResNet's 48-channel 3x3 shape over 6 images in double: one image's transformed tiles (3.1 MB)
// fill the 4 MB chunk, so the images run one at a time and the filter gradient adds up over six
// chunks; the default (kAuto) takes Winograd here, and forcing im2col gives the same within
// rounding; and with OpenBLAS single-threaded, the 16 products run on the kernel pool.
TEST(ConvKernel, WinogradChunksOfImagesAndTheDefaultPath) {
  const Conv2dGeometry g{
      .n = 6, .h = 32, .w = 32, .c_in = 48, .c_out = 48, .kh = 3, .kw = 3, .stride = 1, .pad = 1};
  ASSERT_TRUE(winograd_suits(g));
  check_conv<double>(g, true, 1e-13, 7, ConvAlgo::kAuto);
  check_conv<float>(g, false, 1e-5, 8, ConvAlgo::kIm2col);
  // With OpenBLAS single-threaded (as mlai_train runs), the 16 products go to the kernel pool.
  const int saved = cpu::blas_threads();
  cpu::set_blas_threads(1);
  check_conv<float>(g, true, 1e-5, 9, ConvAlgo::kWinograd);
  cpu::set_blas_threads(saved);
}

// The direct kernels (conv_direct.h), forced on shapes they take: 3x3 at stride 1 and 2 with
// padding 0, 1 and 2; 1x1; a 7x7/2 stem from 3 channels; 5x5; 16 to 48 channels; rows narrower
// than a pixel block and ragged edges; one image and several. Against the direct loops in all
// three passes, in each instruction set this CPU has.
const Conv2dGeometry kDirectCases[] = {
    {.n = 2, .h = 9, .w = 11, .c_in = 16, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 3, .h = 10, .w = 9, .c_in = 16, .c_out = 32, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
    {.n = 1, .h = 7, .w = 20, .c_in = 32, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 0},
    {.n = 2, .h = 5, .w = 4, .c_in = 16, .c_out = 48, .kh = 3, .kw = 3, .stride = 1, .pad = 2},
    {.n = 2, .h = 6, .w = 13, .c_in = 48, .c_out = 16, .kh = 1, .kw = 1, .stride = 1, .pad = 0},
    {.n = 2, .h = 9, .w = 9, .c_in = 16, .c_out = 32, .kh = 1, .kw = 1, .stride = 2, .pad = 0},
    {.n = 2, .h = 15, .w = 17, .c_in = 3, .c_out = 16, .kh = 7, .kw = 7, .stride = 2, .pad = 3},
    {.n = 1, .h = 8, .w = 12, .c_in = 16, .c_out = 16, .kh = 5, .kw = 5, .stride = 1, .pad = 2},
    {.n = 3, .h = 2, .w = 3, .c_in = 16, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    // resnet20's at batch 8: the stem, a first-stage conv, the stride-2 conv and shortcut into
    // the second stage (several blocks of rows and images on the kernel threads)
    {.n = 8, .h = 32, .w = 32, .c_in = 3, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 8, .h = 32, .w = 32, .c_in = 16, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 8, .h = 32, .w = 32, .c_in = 16, .c_out = 32, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
    {.n = 8, .h = 32, .w = 32, .c_in = 16, .c_out = 32, .kh = 1, .kw = 1, .stride = 2, .pad = 0},
    {.n = 8, .h = 8, .w = 8, .c_in = 64, .c_out = 64, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    // wider than 128 x 128 channels: the filter gradient runs a task per tap
    {.n = 2, .h = 5, .w = 6, .c_in = 144, .c_out = 128, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 3, .h = 7, .w = 7, .c_in = 160, .c_out = 112, .kh = 3, .kw = 3, .stride = 2, .pad = 1},
};

TEST(ConvKernel, DirectMatchesDirectLoops) {
  if (std::string(direct_conv_isa()).empty())
    GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2 + FMA: the direct kernels are not used";
  for (const char* isa : {"avx512", "avx2"}) {
    set_direct_conv_isa(isa);
    if (std::string(direct_conv_isa()) != isa) continue;  // (not on this CPU)
    SCOPED_TRACE(isa);
    for (size_t i = 0; i < std::size(kDirectCases); ++i) {
      const Conv2dGeometry& g = kDirectCases[i];
      EXPECT_TRUE(direct_applies(g, ConvPass::kForward)) << describe(g);
      EXPECT_TRUE(direct_applies(g, ConvPass::kFilter)) << describe(g);
      check_conv<float>(g, i % 2 == 0, 1e-5, static_cast<uint32_t>(300 + 10 * i),
                        ConvAlgo::kDirect);
    }
  }
  set_direct_conv_isa("avx512");
  // Backward data only at stride 1 into channels in sixteens (the others take the kAuto path);
  // output channels in sixteens for every pass; never in double.
  EXPECT_TRUE(direct_applies(kDirectCases[0], ConvPass::kData));
  EXPECT_FALSE(direct_applies(kDirectCases[1], ConvPass::kData));  // stride 2
  EXPECT_FALSE(direct_applies(kDirectCases[6], ConvPass::kData));  // 3 input channels
  Conv2dGeometry odd = kDirectCases[0];
  odd.c_out = 24;
  EXPECT_FALSE(direct_applies(odd, ConvPass::kForward));
  check_conv<double>(kDirectCases[0], true, 1e-13, 390, ConvAlgo::kDirect);
}

// Each output is the same fused multiply-adds in the same order whatever the vector width, the
// pixel blocking and the thread count: the three passes give the same bits in both instruction
// sets and on one thread or the pool: resnet20's first stage, 24 images (filter-gradient blocks
// of images), and a 256-channel layer (filter-gradient tasks per tap).
const Conv2dGeometry kBitCases[] = {
    {.n = 24, .h = 32, .w = 32, .c_in = 16, .c_out = 16, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
    {.n = 4, .h = 8, .w = 8, .c_in = 256, .c_out = 256, .kh = 3, .kw = 3, .stride = 1, .pad = 1},
};

TEST(ConvKernel, DirectGivesTheSameBitsInBothInstructionSetsAndOnAnyThreads) {
  if (std::string(direct_conv_isa()) != "avx512")
    GTEST_SKIP() << "needs a CPU with AVX-512 (and so AVX2) to compare the two";
  for (const Conv2dGeometry& g : kBitCases) {
    SCOPED_TRACE(describe(g));
    const auto x = to<float>(random_vec(g.n * g.h * g.w * g.c_in, 41));
    const auto w = to<float>(random_vec(g.c_out * 9 * g.c_in, 42));
    const auto dy = to<float>(random_vec(g.n * g.h * g.w * g.c_out, 43));
    auto passes = [&] {
      std::vector<float> y(dy.size()), dx(x.size()), dw(w.size());
      cpu::conv2d_forward(x.data(), w.data(), static_cast<const float*>(nullptr), y.data(), g,
                          ConvAlgo::kDirect);
      cpu::conv2d_backward_data(dy.data(), w.data(), dx.data(), g, ConvAlgo::kDirect);
      cpu::conv2d_backward_filter(x.data(), dy.data(), dw.data(), static_cast<float*>(nullptr), g,
                                  ConvAlgo::kDirect);
      return std::vector<std::vector<float>>{y, dx, dw};
    };
    const auto wide = passes();
    set_direct_conv_isa("avx2");
    const auto narrow = passes();
    set_direct_conv_isa("avx512");
    cpu::set_max_threads(1);
    const auto one = passes();
    cpu::set_max_threads(cpu::pool_threads());
    for (int p = 0; p < 3; ++p) {
      EXPECT_EQ(wide[p], narrow[p]) << "pass " << p;
      EXPECT_EQ(wide[p], one[p]) << "pass " << p;
    }
    // ... and the direct kernels ran: they apply to every pass here, and their output is not
    // Winograd's (im2col's may be: an OpenBLAS kernel that adds the taps' products in the same
    // order as these kernels gives the same bits, as it did at 16 channels on the build VM).
    for (ConvPass pass : {ConvPass::kForward, ConvPass::kData, ConvPass::kFilter})
      EXPECT_TRUE(direct_applies(g, pass));
    std::vector<float> y(dy.size());
    cpu::conv2d_forward(x.data(), w.data(), static_cast<const float*>(nullptr), y.data(), g,
                        ConvAlgo::kWinograd);
    EXPECT_NE(y, wide[0]);
  }
}

}  // namespace
}  // namespace mlai::kernels
