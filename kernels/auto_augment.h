// torchvision's automatic augmentation policies on uint8 images, the way torchvision applies
// them to uint8 tensors (transforms/autoaugment.py and the tensor functionals it calls):
// TrivialAugmentWide, RandAugment, AutoAugment's ImageNet, CIFAR-10 and SVHN policies, and
// AugMix (three chains of 1 to 3 operations mixed with the original; alpha 1). Each
// sample gets its own operations and magnitudes from (seed, epoch, sample id) alone, as the
// crop and flip do (kernels/augment.h), so CPU and GPU, any worker count and a resume agree.
//
// The operations themselves are kernels/augment_ops.h (nearest sampling for the geometric ones,
// bilinear for AugMix, as torchvision's defaults). The one deliberate difference from
// torchvision: magnitudes are each bin's exact value rounded to float, where torch's
// vectorized float32 linspace is an ulp off in a few bins (which makes TrivialAugmentWide's
// TranslateX bin 15 a shift of 15 pixels in torchvision instead of 16).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/augment.h"
#include "kernels/augment_ops.h"
#include "kernels/common.h"
#include "kernels/fill.h"

namespace mlai::kernels {

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

// AugMix's mix of one value: keep x the original plus each chain's weight x its result, in
// float32 as torchvision sums it (chain by chain), truncated to uint8.
MLAI_HD uint8_t mix_to_uint8(float v) {
  return static_cast<uint8_t>(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
}

namespace cpu {
// in, out: uint8 [batch, H, W, C], distinct; ids: each sample's data set index.
void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, const AutoAugmentParams& p);
}  // namespace cpu

namespace cuda {
// scratch: uint8, twice as large as `in`; mix: float, as many values as `in` (AugMix only,
// null otherwise); plans: room for p.batch AutoAugmentPlan (device memory).
void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, uint8_t* scratch, float* mix,
                  AutoAugmentPlan* plans, const AutoAugmentParams& p, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
