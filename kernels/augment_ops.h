// The 15 image operations of torchvision's automatic augmentation (transforms/autoaugment.py's
// _apply_op and the tensor functionals it calls) on uint8 images, one output value at a time
// (the CPU twin and the CUDA kernel of kernels/auto_augment share them), with torchvision's
// arithmetic on uint8 tensors: float32 blends truncated to uint8 (brightness, colour, contrast,
// sharpness), integer histograms (equalize), float32 min/max scaling (autocontrast), posterize,
// solarize, invert, and affine resampling with zero fill for shear, translate and rotate (the
// float32 grid of torchvision's _gen_affine_grid, unnormalized and sampled, nearest or
// bilinear, as torch's CPU grid_sample does). kernels/auto_augment.h chooses them per sample.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/augment.h"
#include "kernels/common.h"

namespace mlai::kernels {

enum class AugOpKind : int32_t {
  kIdentity,
  kShearX,
  kShearY,
  kTranslateX,
  kTranslateY,
  kRotate,
  kBrightness,
  kColor,
  kContrast,
  kSharpness,
  kPosterize,
  kSolarize,
  kAutoContrast,
  kEqualize,
  kInvert,
};

// One operation with its magnitude resolved: `coef` holds, for the geometric ones, the float32
// grid coefficients (source x in normalized units = coef[0] x + coef[1] y + coef[2], source y =
// coef[3] x + coef[4] y + coef[5], for output pixel centres x, y relative to the image centre);
// for the blends, coef[0] = float(factor) and coef[1] = float(1 - factor); for Solarize, coef[0]
// the threshold. `bits`: Posterize's bits kept. `bilinear`: the geometric operations sample
// bilinearly (AugMix) instead of the nearest pixel.
struct AugOp {
  AugOpKind kind = AugOpKind::kIdentity;
  int32_t bits = 8;
  int32_t bilinear = 0;
  float coef[6] = {};
};

// torchvision's _get_inverse_affine_matrix(center, angle, translate, scale=1, shear), in double
// as Python computes it.
MLAI_HD void inverse_affine(double cx, double cy, double angle_deg, double tx, double ty,
                            double shear_x_deg, double shear_y_deg, double m[6]) {
  constexpr double kDegToRad = 3.14159265358979323846 / 180.0;
  const double rot = angle_deg * kDegToRad, sx = shear_x_deg * kDegToRad,
               sy = shear_y_deg * kDegToRad;
  const double a = ::cos(rot - sy) / ::cos(sy);
  const double b = -::cos(rot - sy) * ::tan(sx) / ::cos(sy) - ::sin(rot);
  const double c = ::sin(rot - sy) / ::cos(sy);
  const double d = -::sin(rot - sy) * ::tan(sx) / ::cos(sy) + ::cos(rot);
  m[0] = d;
  m[1] = -b;
  m[2] = 0.0;
  m[3] = -c;
  m[4] = a;
  m[5] = 0.0;
  m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
  m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
  m[2] += cx;
  m[5] += cy;
}

// torchvision's _apply_op(img, kind, magnitude) with its arguments resolved for an H x W image.
MLAI_HD AugOp make_op(AugOpKind kind, double magnitude, int64_t H, int64_t W,
                      bool bilinear = false) {
  AugOp op;
  op.kind = kind;
  op.bilinear = bilinear ? 1 : 0;
  constexpr double kRadToDeg = 180.0 / 3.14159265358979323846;
  const double w = static_cast<double>(W), h = static_cast<double>(H);
  double m[6];
  bool affine = true;
  switch (kind) {
    case AugOpKind::kShearX:  // F.affine(shear=[degrees(atan(mag)), 0], center=[0, 0])
      inverse_affine(-0.5 * w, -0.5 * h, 0.0, 0.0, 0.0, ::atan(magnitude) * kRadToDeg, 0.0, m);
      break;
    case AugOpKind::kShearY:
      inverse_affine(-0.5 * w, -0.5 * h, 0.0, 0.0, 0.0, 0.0, ::atan(magnitude) * kRadToDeg, m);
      break;
    case AugOpKind::kTranslateX:  // translate=[int(mag), 0]: truncated toward zero
      inverse_affine(0.0, 0.0, 0.0, static_cast<double>(static_cast<int64_t>(magnitude)), 0.0, 0.0,
                     0.0, m);
      break;
    case AugOpKind::kTranslateY:
      inverse_affine(0.0, 0.0, 0.0, 0.0, static_cast<double>(static_cast<int64_t>(magnitude)), 0.0,
                     0.0, m);
      break;
    case AugOpKind::kRotate:  // F.rotate passes -angle
      inverse_affine(0.0, 0.0, -magnitude, 0.0, 0.0, 0.0, 0.0, m);
      break;
    default:
      affine = false;
  }
  if (affine) {
    // theta in float32, then _gen_affine_grid's rescaling: theta^T / [w / 2, h / 2].
    const float hw = static_cast<float>(0.5 * w), hh = static_cast<float>(0.5 * h);
    for (int k = 0; k < 3; ++k) {
      op.coef[k] = static_cast<float>(m[k]) / hw;
      op.coef[3 + k] = static_cast<float>(m[3 + k]) / hh;
    }
    return op;
  }
  switch (kind) {
    case AugOpKind::kBrightness:
    case AugOpKind::kColor:
    case AugOpKind::kContrast:
    case AugOpKind::kSharpness: {
      const double factor = 1.0 + magnitude;  // _blend(img1, img2, factor)
      op.coef[0] = static_cast<float>(factor);
      op.coef[1] = static_cast<float>(1.0 - factor);
      break;
    }
    case AugOpKind::kPosterize:
      op.bits = static_cast<int32_t>(magnitude);
      break;
    case AugOpKind::kSolarize:
      op.coef[0] = static_cast<float>(magnitude);
      break;
    default:
      break;
  }
  return op;
}

// What the whole-image operations need, per channel (kMaxAugmentChannels): the grayscale mean
// (Contrast), the minimum and maximum (AutoContrast) and the lookup table (Equalize).
struct ImageStats {
  float mean = 0;
  int32_t lo[kMaxAugmentChannels] = {}, hi[kMaxAugmentChannels] = {};
  uint8_t lut[kMaxAugmentChannels][256] = {};
};
MLAI_HD bool op_needs_stats(AugOpKind k) {
  return k == AugOpKind::kContrast || k == AugOpKind::kAutoContrast || k == AugOpKind::kEqualize;
}

#if defined(__CUDA_ARCH__)
MLAI_HD float div_rn(float a, float b) { return __fdiv_rn(a, b); }
MLAI_HD float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
#else
MLAI_HD float div_rn(float a, float b) { return a / b; }
MLAI_HD float fma_rn(float a, float b, float c) { return std::fma(a, b, c); }
#endif

// rgb_to_grayscale on uint8: (0.2989 r + 0.587 g + 0.114 b) in float32, truncated.
MLAI_HD int32_t gray_of(const uint8_t* px) {
  const float v = add_rn(
      add_rn(mul_rn(0.2989f, static_cast<float>(px[0])), mul_rn(0.587f, static_cast<float>(px[1]))),
      mul_rn(0.114f, static_cast<float>(px[2])));
  return static_cast<int32_t>(v);
}
// _blend(img1, img2, factor): float32(factor) img1 + float32(1 - factor) img2, clamped to
// [0, 255] and truncated.
MLAI_HD uint8_t blend(const AugOp& op, float a, float b) {
  float v = add_rn(mul_rn(op.coef[0], a), mul_rn(op.coef[1], b));
  v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
  return static_cast<uint8_t>(v);
}
// Equalize's lookup table from a channel's histogram (torchvision's _scale_channel): step =
// (pixels not of the highest value present) / 255; lut[v] = (cumsum[v - 1] + step / 2) / step.
MLAI_HD void equalize_lut(const int32_t* hist, uint8_t* lut) {
  int64_t total = 0, last = 0;
  for (int v = 0; v < 256; ++v) {
    total += hist[v];
    if (hist[v] != 0) last = hist[v];
  }
  const int64_t step = (total - last) / 255;
  if (step == 0) {
    for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v);
    return;
  }
  int64_t cum = 0;
  for (int v = 0; v < 256; ++v) {
    const int64_t q = (cum + step / 2) / step;
    lut[v] = static_cast<uint8_t>(q > 255 ? 255 : q);
    cum += hist[v];
  }
}

MLAI_HD bool op_is_geometric(AugOpKind k) {
  return k == AugOpKind::kShearX || k == AugOpKind::kShearY || k == AugOpKind::kTranslateX ||
         k == AugOpKind::kTranslateY || k == AugOpKind::kRotate;
}

// Where output pixel (y, x) of a geometric operation reads: the nearest source pixel (ix, iy),
// or for bilinear sampling the top-left corner (x0, y0) of the four and their weights; inside
// false when nothing of the image is read (the value is 0). The same for every channel, so the
// CPU twin works it out once per pixel.
struct GeoSource {
  bool inside = false, bilinear = false;
  int64_t x0 = 0, y0 = 0;
  float nw = 0, ne = 0, sw = 0, se = 0;
};
MLAI_HD GeoSource geometric_source(const AugOp& op, int64_t H, int64_t W, int64_t y, int64_t x) {
  // Pixel centres relative to the image centre (exact), the float32 grid as torch's CPU batched
  // matrix product sums it ([x, y, 1] times the coefficients: x's product, y's added by a fused
  // multiply-add, then the constant), torch's CPU grid_sample unnormalization ((g + 1) times
  // size / 2 less 1/2, as one fused multiply-add: torch's x86 build contracts it) and nearest
  // rounding (half to even). Fused where torch's is: anything else moves a few values across a
  // rounding boundary.
  GeoSource g;
  g.bilinear = op.bilinear != 0;
  const float fx = static_cast<float>(static_cast<double>(x) - 0.5 * W + 0.5);
  const float fy = static_cast<float>(static_cast<double>(y) - 0.5 * H + 0.5);
  const float gx = add_rn(fma_rn(fy, op.coef[1], mul_rn(fx, op.coef[0])), op.coef[2]);
  const float gy = add_rn(fma_rn(fy, op.coef[4], mul_rn(fx, op.coef[3])), op.coef[5]);
  const float sx = fma_rn(add_rn(gx, 1.0f), static_cast<float>(W) * 0.5f, -0.5f);
  const float sy = fma_rn(add_rn(gy, 1.0f), static_cast<float>(H) * 0.5f, -0.5f);
  if (!(sx > -1.0f && sy > -1.0f && sx < static_cast<float>(W) + 1.0f &&
        sy < static_cast<float>(H) + 1.0f))
    return g;
  if (g.bilinear) {
    // torch's CPU bilinear grid_sample: corner weights from the distances to the sides.
    const float xw = ::floorf(sx), yn = ::floorf(sy);
    const float w = add_rn(sx, -xw), e = add_rn(1.0f, -w);
    const float n = add_rn(sy, -yn), s = add_rn(1.0f, -n);
    g.x0 = static_cast<int64_t>(xw);
    g.y0 = static_cast<int64_t>(yn);
    g.nw = mul_rn(s, e);
    g.ne = mul_rn(s, w);
    g.sw = mul_rn(n, e);
    g.se = mul_rn(n, w);
    g.inside = true;
    return g;
  }
  g.x0 = static_cast<int64_t>(::rintf(sx));
  g.y0 = static_cast<int64_t>(::rintf(sy));
  g.inside = g.x0 >= 0 && g.x0 < W && g.y0 >= 0 && g.y0 < H;
  return g;
}
// Channel c's value at g: the nearest pixel's, or the four corners' products summed in order,
// each added by a fused multiply-add (a corner outside the image counts 0), then torchvision's
// rounding back to uint8 (half to even).
MLAI_HD uint8_t geometric_sample(const uint8_t* img, int64_t H, int64_t W, int64_t C,
                                 const GeoSource& g, int64_t c) {
  if (!g.inside) return 0;
  if (!g.bilinear) return img[(g.y0 * W + g.x0) * C + c];
  auto at = [&](int64_t yy, int64_t xx) -> float {
    return yy >= 0 && yy < H && xx >= 0 && xx < W ? img[(yy * W + xx) * C + c] : 0.0f;
  };
  float acc = mul_rn(at(g.y0, g.x0), g.nw);
  acc = fma_rn(at(g.y0, g.x0 + 1), g.ne, acc);
  acc = fma_rn(at(g.y0 + 1, g.x0), g.sw, acc);
  acc = fma_rn(at(g.y0 + 1, g.x0 + 1), g.se, acc);
  acc = ::rintf(acc);
  return static_cast<uint8_t>(acc < 0.0f ? 0.0f : (acc > 255.0f ? 255.0f : acc));
}

// One output value of `op` on image `img` (H x W x C): pixel (y, x), channel c.
MLAI_HD uint8_t apply_op_at(const uint8_t* img, int64_t H, int64_t W, int64_t C, int64_t y,
                            int64_t x, int64_t c, const AugOp& op, const ImageStats& st) {
  const uint8_t v = img[(y * W + x) * C + c];
  switch (op.kind) {
    case AugOpKind::kShearX:
    case AugOpKind::kShearY:
    case AugOpKind::kTranslateX:
    case AugOpKind::kTranslateY:
    case AugOpKind::kRotate:
      return geometric_sample(img, H, W, C, geometric_source(op, H, W, y, x), c);
    case AugOpKind::kBrightness:
      return blend(op, static_cast<float>(v), 0.0f);
    case AugOpKind::kColor:
      if (C != 3) return v;  // adjust_saturation leaves grayscale images alone (as PIL)
      return blend(op, static_cast<float>(v), static_cast<float>(gray_of(img + (y * W + x) * C)));
    case AugOpKind::kContrast:
      return blend(op, static_cast<float>(v), st.mean);
    case AugOpKind::kSharpness: {
      if (H <= 2 || W <= 2) return v;
      int32_t blurred = v;  // the border keeps its pixels
      if (y > 0 && y < H - 1 && x > 0 && x < W - 1) {
        // 3x3 kernel of ones with 5 at the centre, over 13, rounded: the exact sum k / 13 is
        // never a half, so float32 and integer arithmetic round it alike.
        int32_t k = 4 * v;
        for (int64_t dy = -1; dy <= 1; ++dy)
          for (int64_t dx = -1; dx <= 1; ++dx) k += img[((y + dy) * W + (x + dx)) * C + c];
        blurred = (2 * k + 13) / 26;
      }
      return blend(op, static_cast<float>(v), static_cast<float>(blurred));
    }
    case AugOpKind::kPosterize:
      return static_cast<uint8_t>(v & (0xff << (8 - op.bits)) & 0xff);
    case AugOpKind::kSolarize:
      return static_cast<float>(v) >= op.coef[0] ? static_cast<uint8_t>(255 - v) : v;
    case AugOpKind::kAutoContrast: {
      const int32_t lo = st.lo[c], hi = st.hi[c];
      if (hi == lo) return v;
      // scale = 255 / (max - min) as torch evaluates a number over a tensor: the reciprocal,
      // then the product.
      const float scale = mul_rn(div_rn(1.0f, static_cast<float>(hi - lo)), 255.0f);
      float s = mul_rn(static_cast<float>(v - lo), scale);
      s = s > 255.0f ? 255.0f : s;
      return static_cast<uint8_t>(s);
    }
    case AugOpKind::kEqualize:
      return st.lut[c][v];
    case AugOpKind::kInvert:
      return static_cast<uint8_t>(255 - v);
    default:
      return v;
  }
}

namespace cpu {
// One operation on one image (H x W x C): in and out distinct.
void apply_augment_op(const uint8_t* in, uint8_t* out, int64_t H, int64_t W, int64_t C,
                      const AugOp& op);
}  // namespace cpu

}  // namespace mlai::kernels
