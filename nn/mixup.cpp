// MixUp and CutMix: the per-batch draws and the mixed loss (see mixup.h).
#include "nn/mixup.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "kernels/fill.h"

namespace mlai::nn {

namespace {
constexpr double kTwoPi = 6.283185307179586476925286766559;

double uniform(uint64_t seed, uint64_t* counter) { return kernels::uniform01(seed, (*counter)++); }

double normal(uint64_t seed, uint64_t* counter) {  // Box-Muller, one of the pair
  const double u1 = 1.0 - uniform(seed, counter);  // (0, 1]: log stays finite
  const double u2 = uniform(seed, counter);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
}

// Gamma(a, 1) by Marsaglia and Tsang (2000); for a < 1, Gamma(a + 1) * U^(1/a).
double sample_gamma(double a, uint64_t seed, uint64_t* counter) {
  if (a < 1.0) {
    const double g = sample_gamma(a + 1.0, seed, counter);
    const double u = 1.0 - uniform(seed, counter);
    return g * std::pow(u, 1.0 / a);
  }
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = normal(seed, counter);
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - uniform(seed, counter);
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}
}  // namespace

double sample_beta(double a, uint64_t seed, uint64_t* counter) {
  const double x = sample_gamma(a, seed, counter), y = sample_gamma(a, seed, counter);
  return x + y > 0 ? x / (x + y) : 0.5;  // both underflow only for tiny alpha
}

kernels::MixParams draw_mix(const MixConfig& c, uint64_t seed, int rank, int64_t epoch,
                            int64_t batch, int64_t batch_size, int64_t height, int64_t width,
                            int64_t channels) {
  using kernels::mix64;
  const uint64_t stream =
      mix64(mix64(mix64(seed, 0x6d69787570ull), static_cast<uint64_t>(rank)),
            static_cast<uint64_t>(epoch));
  const uint64_t s = mix64(stream, static_cast<uint64_t>(batch));
  uint64_t counter = 0;
  kernels::MixParams p;
  p.batch = batch_size;
  p.height = height;
  p.width = width;
  p.channels = channels;
  bool cut = c.cutmix_alpha > 0;
  if (c.mixup_alpha > 0 && c.cutmix_alpha > 0) cut = uniform(s, &counter) < 0.5;
  const double lambda = sample_beta(cut ? c.cutmix_alpha : c.mixup_alpha, s, &counter);
  if (!cut) {
    p.lambda = static_cast<float>(lambda);
    p.one_minus_lambda = static_cast<float>(1.0 - lambda);
    return p;
  }
  // torchvision's CutMix box: a centre anywhere, half-sides r * size with r = sqrt(1 - lambda)
  // / 2 (truncated), clipped to the image; lambda becomes the share the box leaves.
  const auto r_x = static_cast<int64_t>(uniform(s, &counter) * static_cast<double>(width));
  const auto r_y = static_cast<int64_t>(uniform(s, &counter) * static_cast<double>(height));
  const double r = 0.5 * std::sqrt(1.0 - lambda);
  const auto half_w = static_cast<int64_t>(r * static_cast<double>(width));
  const auto half_h = static_cast<int64_t>(r * static_cast<double>(height));
  p.cut = true;
  p.x1 = std::max<int64_t>(r_x - half_w, 0);
  p.y1 = std::max<int64_t>(r_y - half_h, 0);
  p.x2 = std::min<int64_t>(r_x + half_w, width);
  p.y2 = std::min<int64_t>(r_y + half_h, height);
  const double adjusted = 1.0 - static_cast<double>((p.x2 - p.x1) * (p.y2 - p.y1)) /
                                    static_cast<double>(width * height);
  p.lambda = static_cast<float>(adjusted);
  p.one_minus_lambda = static_cast<float>(1.0 - adjusted);
  return p;
}

autograd::Variable mixed_cross_entropy(const autograd::Variable& logits,
                                       const tensor::Tensor& labels, const tensor::Tensor& rolled,
                                       double lambda, double label_smoothing) {
  const autograd::Variable own = autograd::cross_entropy(logits, labels, label_smoothing);
  if (lambda >= 1.0) return own;
  const autograd::Variable other = autograd::cross_entropy(logits, rolled, label_smoothing);
  return autograd::add(autograd::scale(own, lambda), autograd::scale(other, 1.0 - lambda));
}

}  // namespace mlai::nn
