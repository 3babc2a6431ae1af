// CPU twin of kernels/auto_augment.cu: each sample's operations in turn, through a scratch image.
#include "kernels/auto_augment.h"

#include <cstring>
#include <vector>

namespace mlai::kernels::cpu {

namespace {
// The statistics `op` reads (integer sums and counts, so the CUDA kernel's atomics agree).
void image_stats(const uint8_t* img, int64_t H, int64_t W, int64_t C, const AugOp& op,
                 ImageStats& st) {
  const int64_t n = H * W;
  if (op.kind == AugOpKind::kContrast) {
    int64_t sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += C == 3 ? gray_of(img + i * C) : img[i * C];
    st.mean = static_cast<float>(sum) / static_cast<float>(n);  // torch.mean: sum / count
  } else if (op.kind == AugOpKind::kAutoContrast) {
    for (int64_t c = 0; c < C; ++c) {
      st.lo[c] = 255;
      st.hi[c] = 0;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const int32_t v = img[i * C + c];
        st.lo[c] = v < st.lo[c] ? v : st.lo[c];
        st.hi[c] = v > st.hi[c] ? v : st.hi[c];
      }
  } else if (op.kind == AugOpKind::kEqualize) {
    for (int64_t c = 0; c < C; ++c) {
      int32_t hist[256] = {};
      for (int64_t i = 0; i < n; ++i) ++hist[img[i * C + c]];
      equalize_lut(hist, st.lut[c]);
    }
  }
}
}  // namespace

void apply_augment_op(const uint8_t* in, uint8_t* out, int64_t H, int64_t W, int64_t C,
                      const AugOp& op) {
  if (op_is_geometric(op.kind)) {  // the source position once per pixel, for every channel
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const GeoSource g = geometric_source(op, H, W, y, x);
        for (int64_t c = 0; c < C; ++c)
          out[(y * W + x) * C + c] = geometric_sample(in, H, W, C, g, c);
      }
    return;
  }
  ImageStats st;
  if (op_needs_stats(op.kind)) image_stats(in, H, W, C, op, st);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c)
        out[(y * W + x) * C + c] = apply_op_at(in, H, W, C, y, x, c, op, st);
}

void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, const AutoAugmentParams& p) {
  const int64_t image = p.height * p.width * p.channels;
  std::vector<uint8_t> a(static_cast<size_t>(image)), b(static_cast<size_t>(image));
  std::vector<float> mix(p.policy == AutoAugmentPolicy::kAugMix ? static_cast<size_t>(image) : 0);
  for (int64_t s = 0; s < p.batch; ++s) {
    const AutoAugmentPlan plan = auto_augment_plan(p, ids[s]);
    const uint8_t* src = in + s * image;
    uint8_t* dst = out + s * image;
    if (plan.count == 0) {
      std::memcpy(dst, src, static_cast<size_t>(image));
      continue;
    }
    if (plan.chains > 0) {  // AugMix
      for (int64_t i = 0; i < image; ++i) mix[static_cast<size_t>(i)] = mul_rn(plan.keep, src[i]);
      for (int32_t ch = 0; ch < plan.chains; ++ch) {
        const uint8_t* from = src;
        for (int32_t k = plan.chain_begin[ch]; k < plan.chain_begin[ch + 1]; ++k) {
          uint8_t* to = (k - plan.chain_begin[ch]) % 2 == 0 ? a.data() : b.data();
          apply_augment_op(from, to, p.height, p.width, p.channels, plan.ops[k]);
          from = to;
        }
        for (int64_t i = 0; i < image; ++i)
          mix[static_cast<size_t>(i)] =
              add_rn(mix[static_cast<size_t>(i)], mul_rn(plan.weight[ch], from[i]));
      }
      for (int64_t i = 0; i < image; ++i) dst[i] = mix_to_uint8(mix[static_cast<size_t>(i)]);
      continue;
    }
    for (int32_t k = 0; k < plan.count; ++k) {
      // The last operation writes the output; the others alternate between two scratch images.
      uint8_t* to = k == plan.count - 1 ? dst : (k % 2 == 0 ? a.data() : b.data());
      apply_augment_op(src, to, p.height, p.width, p.channels, plan.ops[k]);
      src = to;
    }
  }
}

}  // namespace mlai::kernels::cpu
