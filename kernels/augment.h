// Batch augmentation and normalisation from uint8 pixels (what crosses the bus: 4x fewer
// bytes than floats) to float: optional random crop from a zero-padded image and random
// horizontal flip (torchvision's RandomCrop(padding) + RandomHorizontalFlip), then per-channel
// (x / 255 - mean) / std. Each sample's random decisions come from (seed, epoch, sample id)
// alone, so they are the same on CPU and GPU, whatever the worker count, and after a resume.
#pragma once

#include <cstdint>

#include "kernels/common.h"
#include "kernels/fill.h"

namespace mlai::kernels {

constexpr int kMaxAugmentChannels = 4;

struct AugmentParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int pad = 0;        // random crop offsets in [-pad, pad]; 0: no crop
  bool flip = false;  // random horizontal flip
  uint64_t seed = 0;
  int64_t epoch = 0;
  float mean[kMaxAugmentChannels] = {};
  float inv_std[kMaxAugmentChannels] = {};
};

// The decisions for one sample: crop offsets dy, dx in [-pad, pad] and the flip bit.
struct AugmentChoice {
  int dy, dx;
  bool flip;
};
MLAI_HD AugmentChoice augment_choice(const AugmentParams& p, int64_t sample_id) {
  const uint64_t r = mix64(p.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(p.epoch + 1)),
                           static_cast<uint64_t>(sample_id));
  const uint64_t span = 2 * static_cast<uint64_t>(p.pad) + 1;
  AugmentChoice c;
  c.dy = p.pad ? static_cast<int>(r % span) - p.pad : 0;
  c.dx = p.pad ? static_cast<int>((r >> 20) % span) - p.pad : 0;
  c.flip = p.flip && ((r >> 40) & 1u);
  return c;
}

// MixUp and CutMix on a normalized batch, as torchvision.transforms.v2.MixUp / CutMix do:
// every sample is mixed with the one before it (batch.roll(1, 0): sample b with b - 1, sample
// 0 with the last). MixUp: out = lambda * x[b] + (1 - lambda) * x[b - 1], each product rounded
// to float before the sum. CutMix: out = x[b - 1] inside rows [y1, y2) and columns [x1, x2),
// x[b] elsewhere.
struct MixParams {
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  float lambda = 1.0f;
  bool cut = false;
  int64_t y1 = 0, y2 = 0, x1 = 0, x2 = 0;
};

namespace cpu {
// in: uint8 [batch, H, W, C]; ids: the dataset index of each sample; out: T [batch, H, W, C].
template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p);
// in, out: T [batch, H, W, C], distinct.
template <class T>
void mix_batch(const T* in, T* out, const MixParams& p);
}  // namespace cpu

namespace cuda {
template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p,
                       StreamHandle stream);
template <class T>
void mix_batch(const T* in, T* out, const MixParams& p, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
