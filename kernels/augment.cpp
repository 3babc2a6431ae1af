// CPU twin of kernels/augment.cu.
#include "kernels/augment.h"

namespace mlai::kernels::cpu {

template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p) {
  const int64_t H = p.height, W = p.width, C = p.channels;
  for (int64_t b = 0; b < p.batch; ++b) {
    const AugmentChoice a = augment_choice(p, ids[b]);
    const uint8_t* src = in + b * H * W * C;
    T* dst = out + b * H * W * C;
    for (int64_t y = 0; y < H; ++y) {
      const int64_t sy = y + a.dy;
      for (int64_t x = 0; x < W; ++x) {
        const int64_t sx = (a.flip ? W - 1 - x : x) + a.dx;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        for (int64_t c = 0; c < C; ++c) {
          const float v = inside ? src[(sy * W + sx) * C + c] : 0.0f;  // zero padding
          dst[(y * W + x) * C + c] = from_acc<T>((v * (1.0f / 255.0f) - p.mean[c]) * p.inv_std[c]);
        }
      }
    }
  }
}

template void augment_normalize<float>(const uint8_t*, const int64_t*, float*, const AugmentParams&);
template void augment_normalize<Half>(const uint8_t*, const int64_t*, Half*, const AugmentParams&);
template void augment_normalize<BFloat16>(const uint8_t*, const int64_t*, BFloat16*,
                                          const AugmentParams&);

}  // namespace mlai::kernels::cpu
