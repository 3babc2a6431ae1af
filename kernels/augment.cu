// CUDA batch augmentation: a first kernel draws each sample's decisions once (the same as the
// CPU twin's), then one thread per output element (grid-stride) reads the uint8 source pixels
// its crop/flip (or resized crop) maps to, or writes 0 inside the erased box.
#include <type_traits>

#include "kernels/augment.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {
__global__ void choice_kernel(const int64_t* ids, AugmentChoice* choices, AugmentParams p) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < p.batch) choices[b] = augment_choice(p, ids[b]);
}

template <class T>
__global__ void augment_kernel(const uint8_t* in, const AugmentChoice* choices, T* out,
                               AugmentParams p) {
  const int64_t H = p.height, W = p.width, C = p.channels;
  const int64_t total = p.batch * H * W * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    const int64_t x = (i / C) % W;
    const int64_t y = (i / (C * W)) % H;
    const int64_t b = i / (C * W * H);
    const AugmentChoice a = choices[b];
    float v;
    if (p.resized_crop) {
      const Bilinear s = bilinear_source(a, H, W, y, a.flip ? W - 1 - x : x);
      const uint8_t* img = in + b * H * W * C;
      v = bilinear_blend(s, img[(s.y0 * W + s.x0) * C + c], img[(s.y0 * W + s.x1) * C + c],
                         img[(s.y1 * W + s.x0) * C + c], img[(s.y1 * W + s.x1) * C + c]);
    } else {
      const int64_t sy = y + a.dy;
      const int64_t sx = (a.flip ? W - 1 - x : x) + a.dx;
      const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
      v = inside ? static_cast<float>(in[((b * H + sy) * W + sx) * C + c]) : 0.0f;
    }
    // Separate multiply and add as on the CPU: no fused multiply-add, the same bits. An erased
    // pixel (RandomErasing) is 0.
    if constexpr (std::is_same_v<T, uint8_t>) {
      out[i] = static_cast<uint8_t>(rintf(v));  // the crop before automatic augmentation
    } else {
      out[i] = erased(a, y, x)
                   ? dev::from_acc<T>(0.0f)
                   : dev::from_acc<T>(__fmul_rn(__fadd_rn(__fmul_rn(v, 1.0f / 255.0f), -p.mean[c]),
                                                p.inv_std[c]));
    }
  }
}

template <class T>
__global__ void mix_kernel(const T* in, T* out, MixParams p) {
  const int64_t H = p.height, W = p.width, C = p.channels, image = H * W * C;
  const int64_t total = p.batch * image;
  const float keep = p.lambda, take = p.one_minus_lambda;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / image, within = i - b * image;
    const int64_t rolled = ((b + p.batch - 1) % p.batch) * image + within;  // batch.roll(1, 0)
    if (p.cut) {
      const int64_t x = (within / C) % W, y = within / (C * W);
      const bool inside = y >= p.y1 && y < p.y2 && x >= p.x1 && x < p.x2;
      out[i] = in[inside ? rolled : i];
    } else {
      // Rounded products and sum as on the CPU: no fused multiply-add, the same bits.
      out[i] = dev::from_acc<T>(__fadd_rn(__fmul_rn(keep, dev::to_acc(in[i])),
                                          __fmul_rn(take, dev::to_acc(in[rolled]))));
    }
  }
}
}  // namespace

template <class T>
void mix_batch(const T* in, T* out, const MixParams& p, StreamHandle stream) {
  const int64_t total = p.batch * p.height * p.width * p.channels;
  if (total == 0) return;
  mix_kernel<T><<<dev::grid_size(total), dev::kBlock, 0, stream>>>(in, out, p);
  MLAI_LAUNCH_CHECK();
}

template void mix_batch<float>(const float*, float*, const MixParams&, StreamHandle);
template void mix_batch<Half>(const Half*, Half*, const MixParams&, StreamHandle);
template void mix_batch<BFloat16>(const BFloat16*, BFloat16*, const MixParams&, StreamHandle);

template <class T>
void augment_normalize(const uint8_t* in, const int64_t* ids, T* out, const AugmentParams& p,
                       AugmentChoice* choices, StreamHandle stream) {
  const int64_t total = p.batch * p.height * p.width * p.channels;
  if (total == 0) return;
  constexpr int kChoiceBlock = 128;
  choice_kernel<<<static_cast<unsigned>((p.batch + kChoiceBlock - 1) / kChoiceBlock), kChoiceBlock,
                  0, stream>>>(ids, choices, p);
  MLAI_LAUNCH_CHECK();
  augment_kernel<T><<<dev::grid_size(total), dev::kBlock, 0, stream>>>(in, choices, out, p);
  MLAI_LAUNCH_CHECK();
}

template void augment_normalize<float>(const uint8_t*, const int64_t*, float*, const AugmentParams&,
                                       AugmentChoice*, StreamHandle);
template void augment_normalize<Half>(const uint8_t*, const int64_t*, Half*, const AugmentParams&,
                                      AugmentChoice*, StreamHandle);
template void augment_normalize<BFloat16>(const uint8_t*, const int64_t*, BFloat16*,
                                          const AugmentParams&, AugmentChoice*, StreamHandle);
template void augment_normalize<uint8_t>(const uint8_t*, const int64_t*, uint8_t*,
                                         const AugmentParams&, AugmentChoice*, StreamHandle);

}  // namespace mlai::kernels::cuda
