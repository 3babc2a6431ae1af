// MixUp and CutMix, as torchvision.transforms.v2.MixUp and CutMix apply them to a batch (with
// both, RandomChoice([CutMix, MixUp]): one or the other per batch, evenly): each sample is
// mixed with the one before it in the batch, and the loss is the cross-entropy against the
// mixed one-hot labels, lambda * CE(labels) + (1 - lambda) * CE(labels rolled by one).
#pragma once

#include <cstdint>

#include "autograd/variable.h"
#include "kernels/augment.h"

namespace mlai::nn {

struct MixConfig {
  double mixup_alpha = 0;   // > 0: MixUp with lambda ~ Beta(alpha, alpha)
  double cutmix_alpha = 0;  // > 0: CutMix with lambda ~ Beta(alpha, alpha)
  bool enabled() const { return mixup_alpha > 0 || cutmix_alpha > 0; }
};

// One batch's draw: MixUp or CutMix, lambda (the weight of each sample's own label, for CutMix
// the share of its own pixels after the box is clipped to the image) and the box. A function of
// (seed, rank, epoch, batch) alone: the same after a resume, for any --workers.
kernels::MixParams draw_mix(const MixConfig& c, uint64_t seed, int rank, int64_t epoch,
                            int64_t batch, int64_t batch_size, int64_t height, int64_t width,
                            int64_t channels);

// A Beta(a, a) sample from the counter-based stream (seed, counter..): Marsaglia and Tsang's
// gamma method, X / (X + Y) for X, Y ~ Gamma(a). Advances *counter.
double sample_beta(double a, uint64_t seed, uint64_t* counter);

// lambda * CE(logits, labels) + (1 - lambda) * CE(logits, rolled): cross-entropy against the
// mixed one-hot targets (and label smoothing on them, as torch.nn.functional.cross_entropy with
// probabilities does).
autograd::Variable mixed_cross_entropy(const autograd::Variable& logits,
                                       const tensor::Tensor& labels, const tensor::Tensor& rolled,
                                       double lambda, double label_smoothing);

}  // namespace mlai::nn
