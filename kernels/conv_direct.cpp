// The direct convolution's dispatch (conv_direct.h): which shapes and CPUs it takes, the filter
// repacked so output channels are contiguous, the work cut into fixed blocks for the kernel
// threads, and the filter gradient's per-block sums added in block order (the same bits on any
// thread count).
#include "kernels/conv_direct.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/parallel.h"

namespace mlai::kernels {

namespace {
// 2: AVX-512, 1: AVX2 + FMA, 0: neither (or not an x86 build).
int cpu_isa() {
#if defined(MLAI_X86_DIRECT_CONV)
  static const int isa = __builtin_cpu_supports("avx512f")                                 ? 2
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                                           : 0;
  return isa;
#else
  return 0;
#endif
}
std::atomic<int>& isa_cap() {
  static std::atomic<int> cap{2};
  return cap;
}
int isa() { return std::min(cpu_isa(), isa_cap().load()); }
}  // namespace

const char* direct_conv_isa() {
  const int i = isa();
  return i == 2 ? "avx512" : i == 1 ? "avx2" : "";
}

void set_direct_conv_isa(const std::string& isa) {
  isa_cap().store(isa == "avx512" ? 2 : isa == "avx2" ? 1 : 0);
}

bool direct_applies(const Conv2dGeometry& g, ConvPass pass) {
  if (isa() == 0 || g.groups != 1 || g.kh != g.kw || g.kh > 11 || g.c_out % 16 != 0 || g.pad < 0 ||
      g.stride < 1)
    return false;
  // Backward data is the forward convolution of dy with the filter turned round, padded
  // k - 1 - pad: stride 1 only, and its output channels (c_in) in sixteens.
  if (pass == ConvPass::kData) return g.stride == 1 && g.pad < g.kh && g.c_in % 16 == 0;
  return true;
}

bool direct_suits(const Conv2dGeometry& g, ConvPass pass) {
  const ConvAlgo forced = cpu_conv_choice();
  if (forced == ConvAlgo::kDirect) return direct_applies(g, pass);
  if (forced != ConvAlgo::kAuto) return false;
  // Where it measured faster than Winograd and im2col on the 2-core EPYC VM
  // (bench/results/2026-11-28-cpu-direct-conv.md, and 2026-12-06-cpu-conv-choice.md on a quiet
  // machine): up to 256 channels each way, except where Winograd applies with 128 channels or
  // more (its GEMMs are wide enough there: 1.1-1.5x faster than these kernels in every pass at
  // 16x16x128 and 8x8x256, 2-3x at 4x4x512). A 1x1 stride-1 convolution is one GEMM already.
  const bool pointwise = g.kh == 1 && g.stride == 1 && g.pad == 0;
  const bool winograd_wide = winograd_suits(g) && std::max(g.c_in, g.c_out) >= 128;
  return direct_applies(g, pass) && g.c_in <= 256 && g.c_out <= 256 && !pointwise && !winograd_wide;
}

namespace cpu {

namespace {

// The filter gradient of a layer this wide runs a task per tap (filter_taps): a buffer of sums
// per block of images would be megabytes, and adding them up cost more than the products.
bool wide_filter(const Conv2dGeometry& g) { return g.c_in * g.c_out > 128 * 128; }

void run_forward(direct::Forward a) {
  const std::vector<float> zeros(static_cast<size_t>(a.ci), 0.0f);  // what padding taps read
  a.zeros = zeros.data();
  // Blocks of output rows with ~2M multiply-adds each.
  const int64_t per_row = std::max<int64_t>(1, a.ow * a.co * a.k * a.k * a.ci);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 21) / per_row);
  const bool wide = isa() == 2;
  parallel_for(a.n * a.oh, grain, [&](int64_t r0, int64_t r1) {
    if (wide)
      direct::forward_rows_avx512(a, r0, r1);
    else
      direct::forward_rows_avx2(a, r0, r1);
  });
}

}  // namespace

void direct_forward(const float* x, const float* w, float* y, const Conv2dGeometry& g) {
  const int64_t k = g.kh, ci = g.c_in, co = g.c_out;
  std::vector<float> wt(static_cast<size_t>(k * k * ci * co));  // OHWI -> HWIO
  for (int64_t o = 0; o < co; ++o)
    for (int64_t t = 0; t < k * k; ++t)
      for (int64_t c = 0; c < ci; ++c) wt[(t * ci + c) * co + o] = w[(o * k * k + t) * ci + c];
  run_forward({x, wt.data(), y, g.n, g.h, g.w, ci, co, k, g.stride, g.pad, g.out_h(), g.out_w()});
}

void direct_backward_data(const float* dy, const float* w, float* dx, const Conv2dGeometry& g) {
  // dx = dy convolved (stride 1, padding k - 1 - pad) with the filter rotated 180 degrees, its
  // channels swapped: wt[i, j, o, c] = w[o, k-1-i, k-1-j, c], as HWIO of a c_out -> c_in conv.
  const int64_t k = g.kh, ci = g.c_in, co = g.c_out;
  std::vector<float> wt(static_cast<size_t>(k * k * ci * co));
  for (int64_t o = 0; o < co; ++o)
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t c = 0; c < ci; ++c)
          wt[(((k - 1 - i) * k + (k - 1 - j)) * co + o) * ci + c] =
              w[((o * k + i) * k + j) * ci + c];
  run_forward(
      {dy, wt.data(), dx, g.n, g.out_h(), g.out_w(), co, ci, k, 1, k - 1 - g.pad, g.h, g.w});
}

void direct_backward_filter(const float* x, const float* dy, float* dw, const Conv2dGeometry& g) {
  const int64_t k = g.kh, ci = g.c_in, co = g.c_out, size = k * k * ci * co;
  const direct::Filter a{x, dy, g.n, g.h, g.w, ci, co, k, g.stride, g.pad, g.out_h(), g.out_w()};
  const bool avx512 = isa() == 2;
  std::vector<float> dwt(static_cast<size_t>(size));
  if (wide_filter(g)) {
    // A task per tap and 16 output channels, each adding every image into its own sums.
    parallel_for(k * k * (co / 16), 1, [&](int64_t t0, int64_t t1) {
      if (avx512)
        direct::filter_taps_avx512(a, t0, t1, dwt.data());
      else
        direct::filter_taps_avx2(a, t0, t1, dwt.data());
    });
  } else {
    // Blocks of images with ~8M multiply-adds each (fixed by the shape, not the threads), each
    // summed into its own buffer, then the buffers added in block order.
    const int64_t per_image = std::max<int64_t>(1, a.oh * a.ow * size);
    const int64_t images =
        std::clamp<int64_t>((int64_t{1} << 23) / per_image, 1, std::max<int64_t>(g.n, 1));
    const int64_t blocks = num_blocks(g.n, images);
    std::vector<float> partial(static_cast<size_t>(std::max<int64_t>(blocks, 1) * size), 0.0f);
    parallel_blocks(g.n, images, [&](int64_t blk, int64_t n0, int64_t n1) {
      float* out = partial.data() + blk * size;
      if (avx512)
        direct::filter_images_avx512(a, n0, n1, out);
      else
        direct::filter_images_avx2(a, n0, n1, out);
    });
    parallel_for(size, kElementGrain, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) {
        float s = partial[e];
        for (int64_t b = 1; b < blocks; ++b) s += partial[b * size + e];
        dwt[e] = s;
      }
    });
  }
  for (int64_t o = 0; o < co; ++o)  // HWIO -> OHWI
    for (int64_t t = 0; t < k * k; ++t)
      for (int64_t c = 0; c < ci; ++c) dw[(o * k * k + t) * ci + c] = dwt[(t * ci + c) * co + o];
}

}  // namespace cpu
}  // namespace mlai::kernels
