// Batch augmentation and normalisation from uint8 pixels (what crosses the bus: 4x fewer
// bytes than floats) to float: optional random crop from a zero-padded image and random
// horizontal flip (torchvision's RandomCrop(padding) + RandomHorizontalFlip), then per-channel
// (x / 255 - mean) / std. Each sample's random decisions come from (seed, epoch, sample id)
// alone, so they are the same on CPU and GPU, whatever the worker count, and after a resume.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/fill.h"

namespace mlai::kernels {

constexpr int kMaxAugmentChannels = 4;

struct AugmentParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int pad = 0;        // random crop offsets in [-pad, pad]; 0: no crop
  bool flip = false;  // random horizontal flip
  // torchvision's RandomResizedCrop(size = the image's, scale, ratio) instead of the padded
  // crop: a box of a random share of the area in [scale_lo, scale_hi] and a log-uniform
  // aspect ratio in [exp(log_ratio_lo), exp(log_ratio_hi)] (10 tries, else the central crop
  // torchvision falls back to), resized bilinearly (half-pixel centres, edges clamped: torch's
  // align_corners=False) to H x W; then the flip.
  bool resized_crop = false;
  double scale_lo = 0.08, scale_hi = 1.0;
  double log_ratio_lo = -0.28768207245178090, log_ratio_hi = 0.28768207245178090;  // 3/4, 4/3
  // torchvision's RandomErasing(p, scale, ratio, value=0) after the normalization: with
  // probability erase_p, a box of a random share of the area in [erase_scale_lo, hi] and a
  // log-uniform aspect ratio (height / width) in [exp(erase_log_ratio_lo), exp(hi)] is set to 0
  // (10 tries at a box smaller than the image, else none, as torchvision's get_params).
  double erase_p = 0;
  double erase_scale_lo = 0.02, erase_scale_hi = 0.33;
  double erase_log_ratio_lo = -1.2039728043259361, erase_log_ratio_hi = 1.1939224684724346;
  uint64_t seed = 0;
  int64_t epoch = 0;
  float mean[kMaxAugmentChannels] = {};
  float inv_std[kMaxAugmentChannels] = {};
};

// Rounded arithmetic that no compiler contracts into a fused multiply-add, on the host (built
// with -ffp-contract=off) and on the device alike: the CPU twin and the CUDA kernel give the
// same bits.
#if defined(__CUDA_ARCH__)
MLAI_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
MLAI_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
MLAI_HD double dmul_rn(double a, double b) { return __dmul_rn(a, b); }
MLAI_HD double dadd_rn(double a, double b) { return __dadd_rn(a, b); }
#else
MLAI_HD float mul_rn(float a, float b) { return a * b; }
MLAI_HD float add_rn(float a, float b) { return a + b; }
MLAI_HD double dmul_rn(double a, double b) { return a * b; }
MLAI_HD double dadd_rn(double a, double b) { return a + b; }
#endif

// The decisions for one sample: crop offsets dy, dx in [-pad, pad] and the flip bit; under
// resized_crop, the box (top, left, h, w) instead of the offsets; the erased box in output
// pixels (etop, eleft, eh, ew; eh = 0: nothing erased).
struct AugmentChoice {
  int dy, dx;
  bool flip;
  int64_t top, left, h, w;
  int64_t etop, eleft, eh, ew;
};
MLAI_HD bool erased(const AugmentChoice& a, int64_t y, int64_t x) {
  return y >= a.etop && y < a.etop + a.eh && x >= a.eleft && x < a.eleft + a.ew;
}

// RandomErasing.get_params from its own stream of draws (independent of the crop's): the first
// decides whether to erase, then four per try (area share, log ratio, top, left).
MLAI_HD void erase_choice(const AugmentParams& p, int64_t sample_id, AugmentChoice& c) {
  c.etop = c.eleft = c.eh = c.ew = 0;
  if (p.erase_p <= 0) return;
  const uint64_t r = mix64(p.seed ^ (0xd1b54a32d192ed03ull * static_cast<uint64_t>(p.epoch + 1)),
                           static_cast<uint64_t>(sample_id));
  if (uniform01(r, 0) >= p.erase_p) return;  // torchvision: erase if torch.rand(1) < p
  const double area = static_cast<double>(p.height) * static_cast<double>(p.width);
  for (uint64_t k = 0; k < 10; ++k) {
    const double share = dadd_rn(
        p.erase_scale_lo, dmul_rn(p.erase_scale_hi - p.erase_scale_lo, uniform01(r, 4 * k + 1)));
    const double ratio =
        ::exp(dadd_rn(p.erase_log_ratio_lo, dmul_rn(p.erase_log_ratio_hi - p.erase_log_ratio_lo,
                                                    uniform01(r, 4 * k + 2))));
    const double erase_area = dmul_rn(area, share);
    const auto h = static_cast<int64_t>(::rint(::sqrt(erase_area * ratio)));
    const auto w = static_cast<int64_t>(::rint(::sqrt(erase_area / ratio)));
    if (!(h < p.height && w < p.width)) continue;
    c.etop = static_cast<int64_t>(uniform01(r, 4 * k + 3) * static_cast<double>(p.height - h + 1));
    c.eleft = static_cast<int64_t>(uniform01(r, 4 * k + 4) * static_cast<double>(p.width - w + 1));
    c.eh = h;
    c.ew = w;
    return;
  }
}

MLAI_HD AugmentChoice crop_choice(const AugmentParams& p, int64_t sample_id) {
  const uint64_t r = mix64(p.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(p.epoch + 1)),
                           static_cast<uint64_t>(sample_id));
  const uint64_t span = 2 * static_cast<uint64_t>(p.pad) + 1;
  AugmentChoice c;
  c.dy = p.pad ? static_cast<int>(r % span) - p.pad : 0;
  c.dx = p.pad ? static_cast<int>((r >> 20) % span) - p.pad : 0;
  c.flip = p.flip && ((r >> 40) & 1u);
  c.top = c.left = 0;
  c.h = p.height;
  c.w = p.width;
  if (!p.resized_crop) return c;
  // torchvision's RandomResizedCrop.get_params, with uniform draws from the stream r (Python's
  // round() is to even: rint).
  const double H = static_cast<double>(p.height), W = static_cast<double>(p.width);
  for (uint64_t k = 0; k < 10; ++k) {
    // (rounded multiply and add on the device too: no fused multiply-add in the draws)
    const double target =
        dmul_rn(H * W, dadd_rn(p.scale_lo, dmul_rn(p.scale_hi - p.scale_lo, uniform01(r, 4 * k))));
    const double ratio = ::exp(dadd_rn(p.log_ratio_lo, dmul_rn(p.log_ratio_hi - p.log_ratio_lo,
                                                               uniform01(r, 4 * k + 1))));
    const auto w = static_cast<int64_t>(::rint(::sqrt(target * ratio)));
    const auto h = static_cast<int64_t>(::rint(::sqrt(target / ratio)));
    if (0 < w && w <= p.width && 0 < h && h <= p.height) {
      c.top = static_cast<int64_t>(uniform01(r, 4 * k + 2) * static_cast<double>(p.height - h + 1));
      c.left = static_cast<int64_t>(uniform01(r, 4 * k + 3) * static_cast<double>(p.width - w + 1));
      c.h = h;
      c.w = w;
      return c;
    }
  }
  const double in_ratio = W / H, lo = ::exp(p.log_ratio_lo), hi = ::exp(p.log_ratio_hi);
  if (in_ratio < lo) {
    c.h = static_cast<int64_t>(::rint(W / lo));
  } else if (in_ratio > hi) {
    c.w = static_cast<int64_t>(::rint(H * hi));
  }
  c.top = (p.height - c.h) / 2;
  c.left = (p.width - c.w) / 2;
  return c;
}

MLAI_HD AugmentChoice augment_choice(const AugmentParams& p, int64_t sample_id) {
  AugmentChoice c = crop_choice(p, sample_id);
  erase_choice(p, sample_id, c);
  return c;
}

// One output pixel's source under resized_crop, as torch's bilinear upsampling with
// align_corners=False: the crop's rows y0, y1 and columns x0, x1 (absolute), with weights.
struct Bilinear {
  int64_t y0, y1, x0, x1;
  float ly, lx;
};
MLAI_HD Bilinear bilinear_source(const AugmentChoice& a, int64_t H, int64_t W, int64_t y,
                                 int64_t x) {
  Bilinear s;
  const float sy = static_cast<float>(a.h) / static_cast<float>(H);
  const float sx = static_cast<float>(a.w) / static_cast<float>(W);
  float ry = add_rn(mul_rn(sy, static_cast<float>(y) + 0.5f), -0.5f);
  float rx = add_rn(mul_rn(sx, static_cast<float>(x) + 0.5f), -0.5f);
  ry = ry < 0 ? 0 : ry;
  rx = rx < 0 ? 0 : rx;
  const auto iy = static_cast<int64_t>(ry), ix = static_cast<int64_t>(rx);
  s.ly = add_rn(ry, -static_cast<float>(iy));
  s.lx = add_rn(rx, -static_cast<float>(ix));
  s.y0 = a.top + iy;
  s.y1 = a.top + iy + (iy < a.h - 1 ? 1 : 0);
  s.x0 = a.left + ix;
  s.x1 = a.left + ix + (ix < a.w - 1 ? 1 : 0);
  return s;
}
// The blend of the four source values (as torch: rows first, then between them).
MLAI_HD float bilinear_blend(const Bilinear& s, float v00, float v01, float v10, float v11) {
  const float top = add_rn(mul_rn(1.0f - s.lx, v00), mul_rn(s.lx, v01));
  const float bottom = add_rn(mul_rn(1.0f - s.lx, v10), mul_rn(s.lx, v11));
  return add_rn(mul_rn(1.0f - s.ly, top), mul_rn(s.ly, bottom));
}

// MixUp and CutMix on a normalized batch, as torchvision.transforms.v2.MixUp / CutMix do:
// every sample is mixed with the one before it (batch.roll(1, 0): sample b with b - 1, sample
// 0 with the last). MixUp: out = lambda * x[b] + one_minus_lambda * x[b - 1], each product
// rounded to float before the sum. CutMix: out = x[b - 1] inside rows [y1, y2) and columns [x1, x2),
// x[b] elsewhere.
struct MixParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  float lambda = 1.0f;
  float one_minus_lambda = 0.0f;  // float(1 - lambda) from the double draw, as torch rounds it
  bool cut = false;
  int64_t y1 = 0, y2 = 0, x1 = 0, x2 = 0;
};

namespace cpu {
// in: uint8 [batch, H, W, C]; ids: the dataset index of each sample; out: T [batch, H, W, C].
// choices: room for p.batch AugmentChoice (the CUDA version draws each sample's once into it,
// then every output element reads it); the CPU twin draws per sample and may be given null.
template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p,
                       AugmentChoice* choices);
// in, out: T [batch, H, W, C], distinct.
template <class T>
void mix_batch(const T* in, T* out, const MixParams& p);
}  // namespace cpu

namespace cuda {
template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p,
                       AugmentChoice* choices, StreamHandle stream);
template <class T>
void mix_batch(const T* in, T* out, const MixParams& p, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
