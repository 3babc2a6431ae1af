// CPU twin of kernels/auto_augment.cu: each sample's operations in turn, through scratch images
// (kernels/augment_ops.cpp applies each), and AugMix's float mix.
#include "kernels/auto_augment.h"

#include <cstring>
#include <vector>

namespace mlai::kernels::cpu {

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
