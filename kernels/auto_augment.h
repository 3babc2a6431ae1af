// torchvision's automatic augmentation policies on uint8 images, the way torchvision applies
// them to uint8 tensors (transforms/autoaugment.py and the tensor functionals it calls):
// TrivialAugmentWide, RandAugment, AutoAugment's ImageNet, CIFAR-10 and SVHN policies, and
// AugMix (three chains of 1 to 3 operations mixed with the original; alpha 1). Each
// sample gets its own operations and magnitudes from (seed, epoch, sample id) alone, as the
// crop and flip do (kernels/augment.h), so CPU and GPU, any worker count and a resume agree.
//
// Every operation maps a uint8 image to a uint8 image with torchvision's arithmetic: float32
// blends truncated to uint8 (brightness, colour, contrast, sharpness), integer histograms
// (equalize), float32 min/max scaling (autocontrast), and nearest-neighbour affine resampling
// with zero fill for shear, translate and rotate (the float32 grid of torchvision's
// _gen_affine_grid, unnormalized and rounded as torch's CPU grid_sample does; bilinear for
// AugMix, whose default interpolation that is). The one
// deliberate difference: magnitudes are each bin's exact value rounded to float, where torch's
// vectorized float32 linspace is an ulp off in a few bins (which makes TrivialAugmentWide's
// TranslateX bin 15 a shift of 15 pixels in torchvision instead of 16).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/augment.h"
#include "kernels/common.h"
#include "kernels/fill.h"

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

enum class AutoAugmentPolicy : int32_t {
  kNone,
  kTrivialAugmentWide,  // TrivialAugmentWide(num_magnitude_bins=31)
  kRandAugment,         // RandAugment(num_ops, magnitude, num_magnitude_bins=31)
  kImageNet,            // AutoAugment(AutoAugmentPolicy.IMAGENET)
  kCifar10,             // AutoAugment(AutoAugmentPolicy.CIFAR10)
  kSvhn,                // AutoAugment(AutoAugmentPolicy.SVHN)
  kAugMix,              // AugMix(severity, mixture_width=3, chain_depth=-1, alpha=1)
};

struct AutoAugmentParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;  // channels: 1 or 3
  AutoAugmentPolicy policy = AutoAugmentPolicy::kNone;
  int num_ops = 2;    // RandAugment: operations per image
  int magnitude = 9;  // RandAugment: the magnitude bin, 0..num_bins-1
  int num_bins = 31;  // RandAugment and TrivialAugmentWide: magnitude bins
  int severity = 3;   // AugMix: magnitudes are drawn from its first `severity` bins of 10
  uint64_t seed = 0;
  int64_t epoch = 0;
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

constexpr int kMaxRandAugmentOps = 4;  // RandAugment's num_ops is limited to this
constexpr int kAugMixChains = 3;       // AugMix's mixture_width
constexpr int kAugMixMaxDepth = 3;     // its stochastic chain depth: 1 to 3
constexpr int kMaxAutoAugmentOps = kAugMixChains * kAugMixMaxDepth;
// A sample's operations: one sequence of `count` (chains == 0), or AugMix's chains, chain c
// being ops[chain_begin[c] .. chain_begin[c + 1]), mixed as keep x image + sum of weight[c] x
// chain c's result.
struct AutoAugmentPlan {
  int32_t count = 0;
  int32_t chains = 0;
  int32_t chain_begin[kAugMixChains + 1] = {};
  float keep = 1.0f;
  float weight[kAugMixChains] = {};
  AugOp ops[kMaxAutoAugmentOps];
};

// The magnitude tables of torchvision's _augmentation_space, bin i of n (as a float32 value
// widened to double, as torchvision's float(magnitudes[i].item())).
MLAI_HD double linspace_bin(double start, double end, int n, int i) {
  if (n <= 1) return static_cast<double>(static_cast<float>(start));
  return static_cast<double>(static_cast<float>(start + (end - start) * i / (n - 1)));
}
// Posterize: 8 - round(arange(n) / ((n - 1) / d)) (float32 division, round half to even).
MLAI_HD int posterize_bin(int n, double d, int i) {
  if (n <= 1) return 8;
  const float q = static_cast<float>(i) / static_cast<float>((n - 1) / d);
  return 8 - static_cast<int>(::rintf(q));
}

// Whose magnitude ranges: TrivialAugmentWide's, RandAugment's and AutoAugment's (the same), or
// AugMix's (translations up to a third of the image, Posterize from 4 bits down to 0).
enum class MagnitudeSpace { kWide, kStandard, kAugMix };

// The magnitude of `kind` at bin i of n in `space`.
MLAI_HD double op_magnitude(AugOpKind kind, MagnitudeSpace space, int n, int i, int64_t H,
                            int64_t W) {
  const bool wide = space == MagnitudeSpace::kWide;
  if (space == MagnitudeSpace::kAugMix) {
    if (kind == AugOpKind::kTranslateX)
      return linspace_bin(0.0, static_cast<double>(W) / 3.0, n, i);
    if (kind == AugOpKind::kTranslateY)
      return linspace_bin(0.0, static_cast<double>(H) / 3.0, n, i);
    if (kind == AugOpKind::kPosterize) return posterize_bin(n, 4.0, i) - 4;
  }
  switch (kind) {
    case AugOpKind::kShearX:
    case AugOpKind::kShearY:
      return linspace_bin(0.0, wide ? 0.99 : 0.3, n, i);
    case AugOpKind::kTranslateX:
      return linspace_bin(0.0, wide ? 32.0 : 150.0 / 331.0 * static_cast<double>(W), n, i);
    case AugOpKind::kTranslateY:
      return linspace_bin(0.0, wide ? 32.0 : 150.0 / 331.0 * static_cast<double>(H), n, i);
    case AugOpKind::kRotate:
      return linspace_bin(0.0, wide ? 135.0 : 30.0, n, i);
    case AugOpKind::kBrightness:
    case AugOpKind::kColor:
    case AugOpKind::kContrast:
    case AugOpKind::kSharpness:
      return linspace_bin(0.0, wide ? 0.99 : 0.9, n, i);
    case AugOpKind::kPosterize:
      return posterize_bin(n, wide ? 6.0 : 4.0, i);
    case AugOpKind::kSolarize:
      return linspace_bin(255.0, 0.0, n, i);
    default:
      return 0.0;
  }
}
MLAI_HD bool op_signed(AugOpKind kind) {
  return kind == AugOpKind::kShearX || kind == AugOpKind::kShearY ||
         kind == AugOpKind::kTranslateX || kind == AugOpKind::kTranslateY ||
         kind == AugOpKind::kRotate || kind == AugOpKind::kBrightness ||
         kind == AugOpKind::kColor || kind == AugOpKind::kContrast || kind == AugOpKind::kSharpness;
}

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

// AutoAugment's 25 sub-policies for each of its three data sets: (operation, probability,
// magnitude bin of 10; -1 for operations without a magnitude), from Cubuk et al. (2019) as
// torchvision lists them.
struct SubPolicyStep {
  AugOpKind kind;
  float p;
  int bin;
};
// The tables, kept twice from one list: in constant memory for the device, plain for the host
// (a table local to the function would be copied onto every thread's stack).
// clang-format off
#define MLAI_AUTO_AUGMENT_POLICIES                               \
  {                                                              \
    {/* ImageNet */                                              \
     {{K::kPosterize, 0.4f, 8}, {K::kRotate, 0.6f, 9}},          \
     {{K::kSolarize, 0.6f, 5}, {K::kAutoContrast, 0.6f, -1}},    \
     {{K::kEqualize, 0.8f, -1}, {K::kEqualize, 0.6f, -1}},       \
     {{K::kPosterize, 0.6f, 7}, {K::kPosterize, 0.6f, 6}},       \
     {{K::kEqualize, 0.4f, -1}, {K::kSolarize, 0.2f, 4}},        \
     {{K::kEqualize, 0.4f, -1}, {K::kRotate, 0.8f, 8}},          \
     {{K::kSolarize, 0.6f, 3}, {K::kEqualize, 0.6f, -1}},        \
     {{K::kPosterize, 0.8f, 5}, {K::kEqualize, 1.0f, -1}},       \
     {{K::kRotate, 0.2f, 3}, {K::kSolarize, 0.6f, 8}},           \
     {{K::kEqualize, 0.6f, -1}, {K::kPosterize, 0.4f, 6}},       \
     {{K::kRotate, 0.8f, 8}, {K::kColor, 0.4f, 0}},              \
     {{K::kRotate, 0.4f, 9}, {K::kEqualize, 0.6f, -1}},          \
     {{K::kEqualize, 0.0f, -1}, {K::kEqualize, 0.8f, -1}},       \
     {{K::kInvert, 0.6f, -1}, {K::kEqualize, 1.0f, -1}},         \
     {{K::kColor, 0.6f, 4}, {K::kContrast, 1.0f, 8}},            \
     {{K::kRotate, 0.8f, 8}, {K::kColor, 1.0f, 2}},              \
     {{K::kColor, 0.8f, 8}, {K::kSolarize, 0.8f, 7}},            \
     {{K::kSharpness, 0.4f, 7}, {K::kInvert, 0.6f, -1}},         \
     {{K::kShearX, 0.6f, 5}, {K::kEqualize, 1.0f, -1}},          \
     {{K::kColor, 0.4f, 0}, {K::kEqualize, 0.6f, -1}},           \
     {{K::kEqualize, 0.4f, -1}, {K::kSolarize, 0.2f, 4}},        \
     {{K::kSolarize, 0.6f, 5}, {K::kAutoContrast, 0.6f, -1}},    \
     {{K::kInvert, 0.6f, -1}, {K::kEqualize, 1.0f, -1}},         \
     {{K::kColor, 0.6f, 4}, {K::kContrast, 1.0f, 8}},            \
     {{K::kEqualize, 0.8f, -1}, {K::kEqualize, 0.6f, -1}},       \
    },                                                           \
    {/* CIFAR-10 */                                              \
     {{K::kInvert, 0.1f, -1}, {K::kContrast, 0.2f, 6}},          \
     {{K::kRotate, 0.7f, 2}, {K::kTranslateX, 0.3f, 9}},         \
     {{K::kSharpness, 0.8f, 1}, {K::kSharpness, 0.9f, 3}},       \
     {{K::kShearY, 0.5f, 8}, {K::kTranslateY, 0.7f, 9}},         \
     {{K::kAutoContrast, 0.5f, -1}, {K::kEqualize, 0.9f, -1}},   \
     {{K::kShearY, 0.2f, 7}, {K::kPosterize, 0.3f, 7}},          \
     {{K::kColor, 0.4f, 3}, {K::kBrightness, 0.6f, 7}},          \
     {{K::kSharpness, 0.3f, 9}, {K::kBrightness, 0.7f, 9}},      \
     {{K::kEqualize, 0.6f, -1}, {K::kEqualize, 0.5f, -1}},       \
     {{K::kContrast, 0.6f, 7}, {K::kSharpness, 0.6f, 5}},        \
     {{K::kColor, 0.7f, 7}, {K::kTranslateX, 0.5f, 8}},          \
     {{K::kEqualize, 0.3f, -1}, {K::kAutoContrast, 0.4f, -1}},   \
     {{K::kTranslateY, 0.4f, 3}, {K::kSharpness, 0.2f, 6}},      \
     {{K::kBrightness, 0.9f, 6}, {K::kColor, 0.2f, 8}},          \
     {{K::kSolarize, 0.5f, 2}, {K::kInvert, 0.0f, -1}},          \
     {{K::kEqualize, 0.2f, -1}, {K::kAutoContrast, 0.6f, -1}},   \
     {{K::kEqualize, 0.2f, -1}, {K::kEqualize, 0.6f, -1}},       \
     {{K::kColor, 0.9f, 9}, {K::kEqualize, 0.6f, -1}},           \
     {{K::kAutoContrast, 0.8f, -1}, {K::kSolarize, 0.2f, 8}},    \
     {{K::kBrightness, 0.1f, 3}, {K::kColor, 0.7f, 0}},          \
     {{K::kSolarize, 0.4f, 5}, {K::kAutoContrast, 0.9f, -1}},    \
     {{K::kTranslateY, 0.9f, 9}, {K::kTranslateY, 0.7f, 9}},     \
     {{K::kAutoContrast, 0.9f, -1}, {K::kSolarize, 0.8f, 3}},    \
     {{K::kEqualize, 0.8f, -1}, {K::kInvert, 0.1f, -1}},         \
     {{K::kTranslateY, 0.7f, 9}, {K::kAutoContrast, 0.9f, -1}},  \
    },                                                           \
    {/* SVHN */                                                  \
     {{K::kShearX, 0.9f, 4}, {K::kInvert, 0.2f, -1}},            \
     {{K::kShearY, 0.9f, 8}, {K::kInvert, 0.7f, -1}},            \
     {{K::kEqualize, 0.6f, -1}, {K::kSolarize, 0.6f, 6}},        \
     {{K::kInvert, 0.9f, -1}, {K::kEqualize, 0.6f, -1}},         \
     {{K::kEqualize, 0.6f, -1}, {K::kRotate, 0.9f, 3}},          \
     {{K::kShearX, 0.9f, 4}, {K::kAutoContrast, 0.8f, -1}},      \
     {{K::kShearY, 0.9f, 8}, {K::kInvert, 0.4f, -1}},            \
     {{K::kShearY, 0.9f, 5}, {K::kSolarize, 0.2f, 6}},           \
     {{K::kInvert, 0.9f, -1}, {K::kAutoContrast, 0.8f, -1}},     \
     {{K::kEqualize, 0.6f, -1}, {K::kRotate, 0.9f, 3}},          \
     {{K::kShearX, 0.9f, 4}, {K::kSolarize, 0.3f, 3}},           \
     {{K::kShearY, 0.8f, 8}, {K::kInvert, 0.7f, -1}},            \
     {{K::kEqualize, 0.9f, -1}, {K::kTranslateY, 0.6f, 6}},      \
     {{K::kInvert, 0.9f, -1}, {K::kEqualize, 0.6f, -1}},         \
     {{K::kContrast, 0.3f, 3}, {K::kRotate, 0.8f, 4}},           \
     {{K::kInvert, 0.8f, -1}, {K::kTranslateY, 0.0f, 2}},        \
     {{K::kShearY, 0.7f, 6}, {K::kSolarize, 0.4f, 8}},           \
     {{K::kInvert, 0.6f, -1}, {K::kRotate, 0.8f, 4}},            \
     {{K::kShearY, 0.3f, 7}, {K::kTranslateX, 0.9f, 3}},         \
     {{K::kShearX, 0.1f, 6}, {K::kInvert, 0.6f, -1}},            \
     {{K::kSolarize, 0.7f, 2}, {K::kTranslateY, 0.6f, 7}},       \
     {{K::kShearY, 0.8f, 4}, {K::kInvert, 0.8f, -1}},            \
     {{K::kShearX, 0.7f, 9}, {K::kTranslateY, 0.8f, 3}},         \
     {{K::kShearY, 0.8f, 5}, {K::kAutoContrast, 0.7f, -1}},      \
     {{K::kShearX, 0.7f, 2}, {K::kInvert, 0.1f, -1}},            \
    }                                                            \
  }
// clang-format on
#define K AugOpKind
#if defined(__CUDACC__)
static __constant__ const SubPolicyStep kAutoAugmentPoliciesDevice[3][25][2] =
    MLAI_AUTO_AUGMENT_POLICIES;
#endif
inline constexpr SubPolicyStep kAutoAugmentPolicies[3][25][2] = MLAI_AUTO_AUGMENT_POLICIES;
#undef K
#undef MLAI_AUTO_AUGMENT_POLICIES

MLAI_HD SubPolicyStep auto_augment_step(AutoAugmentPolicy policy, int sub, int k) {
  const int table = policy == AutoAugmentPolicy::kImageNet  ? 0
                    : policy == AutoAugmentPolicy::kCifar10 ? 1
                                                            : 2;
#if defined(__CUDA_ARCH__)
  return kAutoAugmentPoliciesDevice[table][sub][k];
#else
  return kAutoAugmentPolicies[table][sub][k];
#endif
}

// A draw in [0, n) from uniform u (as torch.randint(n)).
MLAI_HD int draw_below(double u, int n) {
  const int k = static_cast<int>(u * n);
  return k < n ? k : n - 1;
}

// The operations one sample gets: TrivialAugmentWide one of its 14 with a random bin and sign;
// RandAugment num_ops of its 14 at the fixed bin, each with a random sign; AutoAugment one of
// the policy's 25 sub-policies, each of its two steps applied with its probability (torchvision:
// probs[i] <= p) and negated when its sign draw is 0; AugMix three chains of 1 to 3 of its 13
// with random bins below the severity and signs, and the mixing weights.
// (Written field by field into `plan`, which may be device memory: no copy of the whole plan on
// a GPU thread's stack.)
MLAI_HD void fill_auto_augment_plan(const AutoAugmentParams& p, int64_t sample_id,
                                    AutoAugmentPlan& plan) {
  plan.count = 0;
  plan.chains = 0;
  plan.keep = 1.0f;
  if (p.policy == AutoAugmentPolicy::kNone) return;
  const uint64_t r = mix64(p.seed ^ (0xa0761d6478bd642full * static_cast<uint64_t>(p.epoch + 1)),
                           static_cast<uint64_t>(sample_id));
  // The 14 operations of TrivialAugmentWide's and RandAugment's spaces, in torchvision's order.
  constexpr AugOpKind space[14] = {
      AugOpKind::kIdentity,     AugOpKind::kShearX,     AugOpKind::kShearY,
      AugOpKind::kTranslateX,   AugOpKind::kTranslateY, AugOpKind::kRotate,
      AugOpKind::kBrightness,   AugOpKind::kColor,      AugOpKind::kContrast,
      AugOpKind::kSharpness,    AugOpKind::kPosterize,  AugOpKind::kSolarize,
      AugOpKind::kAutoContrast, AugOpKind::kEqualize};
  const int64_t H = p.height, W = p.width;
  if (p.policy == AutoAugmentPolicy::kTrivialAugmentWide) {
    const AugOpKind kind = space[draw_below(uniform01(r, 0), 14)];
    double mag = op_magnitude(kind, MagnitudeSpace::kWide, p.num_bins,
                              draw_below(uniform01(r, 1), p.num_bins), H, W);
    if (op_signed(kind) && uniform01(r, 2) < 0.5) mag = -mag;
    plan.ops[plan.count++] = make_op(kind, mag, H, W);
  } else if (p.policy == AutoAugmentPolicy::kRandAugment) {
    const int n = p.num_ops < kMaxRandAugmentOps ? p.num_ops : kMaxRandAugmentOps;
    for (int k = 0; k < n; ++k) {
      const AugOpKind kind = space[draw_below(uniform01(r, 2 * k), 14)];
      double mag = op_magnitude(kind, MagnitudeSpace::kStandard, p.num_bins, p.magnitude, H, W);
      if (op_signed(kind) && uniform01(r, 2 * k + 1) < 0.5) mag = -mag;
      plan.ops[plan.count++] = make_op(kind, mag, H, W);
    }
  } else if (p.policy == AutoAugmentPolicy::kAugMix) {
    // The weights: m ~ Dirichlet(1, 1) for the original and the chains together, the chains'
    // shares ~ Dirichlet(1, 1, 1) times m's second part. With alpha 1 both are uniform
    // spacings (the gaps between sorted uniform draws), exact in any IEEE arithmetic, so the
    // CPU and the GPU draw the same weights.
    const double m = uniform01(r, 0);
    const double a = uniform01(r, 1), b = uniform01(r, 2);
    const double lo = a < b ? a : b, hi = a < b ? b : a;
    const double share[kAugMixChains] = {lo, hi - lo, 1.0 - hi};
    plan.keep = static_cast<float>(m);
    const float rest = static_cast<float>(1.0 - m);
    // AugMix's space with all_ops: the 9 base operations, then the 4 colour ones.
    constexpr AugOpKind mix_space[13] = {
        AugOpKind::kShearX,     AugOpKind::kShearY,       AugOpKind::kTranslateX,
        AugOpKind::kTranslateY, AugOpKind::kRotate,       AugOpKind::kPosterize,
        AugOpKind::kSolarize,   AugOpKind::kAutoContrast, AugOpKind::kEqualize,
        AugOpKind::kBrightness, AugOpKind::kColor,        AugOpKind::kContrast,
        AugOpKind::kSharpness};
    const int severity = p.severity < 1 ? 1 : (p.severity > 10 ? 10 : p.severity);
    plan.chains = kAugMixChains;
    for (int c = 0; c < kAugMixChains; ++c) {
      plan.weight[c] = mul_rn(static_cast<float>(share[c]), rest);
      plan.chain_begin[c] = plan.count;
      const uint64_t base = 3 + 10 * static_cast<uint64_t>(c);
      const int depth = 1 + draw_below(uniform01(r, base), kAugMixMaxDepth);
      for (int k = 0; k < depth; ++k) {
        const uint64_t at = base + 1 + 3 * static_cast<uint64_t>(k);
        const AugOpKind kind = mix_space[draw_below(uniform01(r, at), 13)];
        double mag = op_magnitude(kind, MagnitudeSpace::kAugMix, 10,
                                  draw_below(uniform01(r, at + 1), severity), H, W);
        if (op_signed(kind) && uniform01(r, at + 2) < 0.5) mag = -mag;
        plan.ops[plan.count++] = make_op(kind, mag, H, W, /*bilinear=*/true);
      }
    }
    plan.chain_begin[kAugMixChains] = plan.count;
  } else {
    const int sub = draw_below(uniform01(r, 0), 25);
    for (int k = 0; k < 2; ++k) {
      const SubPolicyStep s = auto_augment_step(p.policy, sub, k);
      if (!(static_cast<float>(uniform01(r, 1 + k)) <= s.p)) continue;
      double mag =
          s.bin >= 0 ? op_magnitude(s.kind, MagnitudeSpace::kStandard, 10, s.bin, H, W) : 0.0;
      if (op_signed(s.kind) && uniform01(r, 3 + k) < 0.5) mag = -mag;
      plan.ops[plan.count++] = make_op(s.kind, mag, H, W);
    }
  }
}
MLAI_HD AutoAugmentPlan auto_augment_plan(const AutoAugmentParams& p, int64_t sample_id) {
  AutoAugmentPlan plan;
  fill_auto_augment_plan(p, sample_id, plan);
  return plan;
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

// AugMix's mix of one value: keep x the original plus each chain's weight x its result, in
// float32 as torchvision sums it (chain by chain), truncated to uint8.
MLAI_HD uint8_t mix_to_uint8(float v) {
  return static_cast<uint8_t>(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
}

namespace cpu {
// in, out: uint8 [batch, H, W, C], distinct; ids: each sample's data set index.
void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, const AutoAugmentParams& p);
// One operation on one image (H x W x C), for tests against torchvision.
void apply_augment_op(const uint8_t* in, uint8_t* out, int64_t H, int64_t W, int64_t C,
                      const AugOp& op);
}  // namespace cpu

namespace cuda {
// scratch: uint8, twice as large as `in`; mix: float, as many values as `in` (AugMix only,
// null otherwise); plans: room for p.batch AutoAugmentPlan (device memory).
void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, uint8_t* scratch, float* mix,
                  AutoAugmentPlan* plans, const AutoAugmentParams& p, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
