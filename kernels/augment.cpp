// CPU twin of kernels/augment.cu.
#include "kernels/augment.h"

#include <cmath>
#include <type_traits>

namespace mlai::kernels::cpu {

namespace {
// A pixel value v (0..255) normalized, or for uint8 output (the crop before automatic
// augmentation) rounded to the nearest integer.
template <class T>
T store(float v, const AugmentParams& p, int64_t c) {
  if constexpr (std::is_same_v<T, uint8_t>) {
    return static_cast<uint8_t>(std::nearbyint(v));
  } else {
    return from_acc<T>((v * (1.0f / 255.0f) - p.mean[c]) * p.inv_std[c]);
  }
}
}  // namespace

template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p,
                       AugmentChoice* /*choices: drawn per sample here*/) {
  const int64_t H = p.height, W = p.width, C = p.channels;
  for (int64_t b = 0; b < p.batch; ++b) {
    const AugmentChoice a = augment_choice(p, ids[b]);
    const uint8_t* src = in + b * H * W * C;
    T* dst = out + b * H * W * C;
    if (p.resized_crop) {
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const Bilinear s = bilinear_source(a, H, W, y, a.flip ? W - 1 - x : x);
          for (int64_t c = 0; c < C; ++c) {
            const float v = bilinear_blend(s, src[(s.y0 * W + s.x0) * C + c],
                                           src[(s.y0 * W + s.x1) * C + c],
                                           src[(s.y1 * W + s.x0) * C + c],
                                           src[(s.y1 * W + s.x1) * C + c]);
            dst[(y * W + x) * C + c] = store<T>(v, p, c);
          }
        }
    } else {
      for (int64_t y = 0; y < H; ++y) {
        const int64_t sy = y + a.dy;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = (a.flip ? W - 1 - x : x) + a.dx;
          const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
          for (int64_t c = 0; c < C; ++c) {
            const float v = inside ? src[(sy * W + sx) * C + c] : 0.0f;  // zero padding
            dst[(y * W + x) * C + c] = store<T>(v, p, c);
          }
        }
      }
    }
    for (int64_t y = a.etop; y < a.etop + a.eh; ++y)  // RandomErasing (value 0)
      for (int64_t x = a.eleft; x < a.eleft + a.ew; ++x)
        for (int64_t c = 0; c < C; ++c) dst[(y * W + x) * C + c] = T{};  // 0 (never uint8 output)
  }
}

template <class T>
void mix_batch(const T* in, T* out, const MixParams& p) {
  const int64_t H = p.height, W = p.width, C = p.channels, image = H * W * C;
  const float keep = p.lambda, take = p.one_minus_lambda;
  for (int64_t b = 0; b < p.batch; ++b) {
    const T* x = in + b * image;
    const T* r = in + ((b + p.batch - 1) % p.batch) * image;  // batch.roll(1, 0)
    T* o = out + b * image;
    if (p.cut) {
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) {
          const bool inside = y >= p.y1 && y < p.y2 && xx >= p.x1 && xx < p.x2;
          const T* src = (inside ? r : x) + (y * W + xx) * C;
          for (int64_t c = 0; c < C; ++c) o[(y * W + xx) * C + c] = src[c];
        }
    } else {
      for (int64_t i = 0; i < image; ++i) {
        const float kept = keep * to_acc(x[i]);
        const float taken = take * to_acc(r[i]);
        o[i] = from_acc<T>(kept + taken);
      }
    }
  }
}

template void mix_batch<float>(const float*, float*, const MixParams&);
template void mix_batch<Half>(const Half*, Half*, const MixParams&);
template void mix_batch<BFloat16>(const BFloat16*, BFloat16*, const MixParams&);

template void augment_normalize<float>(const uint8_t*, const int64_t*, float*, const AugmentParams&,
                                       AugmentChoice*);
template void augment_normalize<Half>(const uint8_t*, const int64_t*, Half*, const AugmentParams&,
                                      AugmentChoice*);
template void augment_normalize<BFloat16>(const uint8_t*, const int64_t*, BFloat16*,
                                          const AugmentParams&, AugmentChoice*);
template void augment_normalize<uint8_t>(const uint8_t*, const int64_t*, uint8_t*,
                                         const AugmentParams&, AugmentChoice*);

}  // namespace mlai::kernels::cpu
