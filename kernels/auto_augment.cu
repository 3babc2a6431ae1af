// CUDA automatic augmentation: a first kernel draws each sample's plan (the CPU twin's), then
// one thread block per image runs its operations in turn (scratch and output alternate; AugMix
// sums its chains into a float image), with
// the whole-image statistics (grayscale sum, per-channel min/max, histograms) gathered in shared
// memory by integer atomics, so every value matches the CPU twin's.
#include "kernels/auto_augment.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {
__global__ void plan_kernel(const int64_t* ids, AutoAugmentPlan* plans, AutoAugmentParams p) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < p.batch) fill_auto_augment_plan(p, ids[b], plans[b]);
}

// The block's shared state for the whole-image statistics.
struct BlockStats {
  ImageStats* st;
  int32_t (*hist)[256];
  unsigned long long* gray_sum;
};

// One operation on one image by the whole block: its statistics first where it needs them,
// then every output value; returns after the block has written all of `to`.
__device__ void block_apply(const uint8_t* src, uint8_t* to, const AugOp& op, int64_t H, int64_t W,
                            int64_t C, const BlockStats& bs) {
  const int64_t n = H * W, image = n * C;
  ImageStats& st = *bs.st;
  if (op_needs_stats(op.kind)) {
    for (int i = threadIdx.x; i < kMaxAugmentChannels * 256; i += blockDim.x)
      bs.hist[i / 256][i % 256] = 0;
    if (threadIdx.x < kMaxAugmentChannels) {
      st.lo[threadIdx.x] = 255;
      st.hi[threadIdx.x] = 0;
    }
    if (threadIdx.x == 0) *bs.gray_sum = 0;
    __syncthreads();
    if (op.kind == AugOpKind::kContrast) {
      unsigned long long local = 0;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        local += static_cast<unsigned long long>(C == 3 ? gray_of(src + i * C) : src[i * C]);
      atomicAdd(bs.gray_sum, local);
    } else if (op.kind == AugOpKind::kAutoContrast) {
      for (int64_t i = threadIdx.x; i < image; i += blockDim.x) {
        atomicMin(&st.lo[i % C], static_cast<int32_t>(src[i]));
        atomicMax(&st.hi[i % C], static_cast<int32_t>(src[i]));
      }
    } else {
      for (int64_t i = threadIdx.x; i < image; i += blockDim.x)
        atomicAdd(&bs.hist[i % C][src[i]], 1);
    }
    __syncthreads();
    if (op.kind == AugOpKind::kContrast && threadIdx.x == 0)
      st.mean = __fdiv_rn(static_cast<float>(*bs.gray_sum), static_cast<float>(n));
    if (op.kind == AugOpKind::kEqualize && threadIdx.x < C)
      equalize_lut(bs.hist[threadIdx.x], st.lut[threadIdx.x]);
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < image; i += blockDim.x) {
    const int64_t c = i % C, x = (i / C) % W, y = i / (C * W);
    to[i] = apply_op_at(src, H, W, C, y, x, c, op, st);
  }
  __syncthreads();  // the next operation reads the whole image
}

__global__ void auto_augment_kernel(const uint8_t* in, uint8_t* out, uint8_t* scratch, float* mix,
                                    const AutoAugmentPlan* plans, AutoAugmentParams p) {
  const int64_t H = p.height, W = p.width, C = p.channels, image = H * W * C;
  const int64_t s = blockIdx.x;
  // (raw storage: ImageStats's member initializers are not allowed on shared memory)
  __shared__ alignas(ImageStats) unsigned char st_storage[sizeof(ImageStats)];
  __shared__ int32_t hist[kMaxAugmentChannels][256];
  __shared__ unsigned long long gray_sum;
  const BlockStats bs{reinterpret_cast<ImageStats*>(st_storage), hist, &gray_sum};
  const AutoAugmentPlan& plan = plans[s];
  const uint8_t* src = in + s * image;
  uint8_t* dst = out + s * image;
  uint8_t* a = scratch + 2 * s * image;
  uint8_t* b = a + image;
  if (plan.count == 0) {
    for (int64_t i = threadIdx.x; i < image; i += blockDim.x) dst[i] = src[i];
    return;
  }
  if (plan.chains == 0) {
    // One sequence: the last operation writes the output, the others alternate between the
    // output and a scratch image so that none reads what it writes.
    for (int32_t k = 0; k < plan.count; ++k) {
      uint8_t* to = (plan.count - 1 - k) % 2 == 1 ? a : dst;
      block_apply(src, to, plan.ops[k], H, W, C, bs);
      src = to;
    }
    return;
  }
  // AugMix: the weighted original, then each chain's result added with its weight.
  float* acc = mix + s * image;
  for (int64_t i = threadIdx.x; i < image; i += blockDim.x)
    acc[i] = __fmul_rn(plan.keep, static_cast<float>(src[i]));
  for (int32_t ch = 0; ch < plan.chains; ++ch) {
    const uint8_t* from = src;
    for (int32_t k = plan.chain_begin[ch]; k < plan.chain_begin[ch + 1]; ++k) {
      uint8_t* to = (k - plan.chain_begin[ch]) % 2 == 0 ? a : b;
      block_apply(from, to, plan.ops[k], H, W, C, bs);
      from = to;
    }
    for (int64_t i = threadIdx.x; i < image; i += blockDim.x)
      acc[i] = __fadd_rn(acc[i], __fmul_rn(plan.weight[ch], static_cast<float>(from[i])));
    __syncthreads();  // the next chain overwrites a and b
  }
  for (int64_t i = threadIdx.x; i < image; i += blockDim.x) dst[i] = mix_to_uint8(acc[i]);
}
}  // namespace

void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, uint8_t* scratch, float* mix,
                  AutoAugmentPlan* plans, const AutoAugmentParams& p, StreamHandle stream) {
  if (p.batch == 0) return;
  constexpr int kPlanBlock = 128;
  plan_kernel<<<static_cast<unsigned>((p.batch + kPlanBlock - 1) / kPlanBlock), kPlanBlock, 0,
                stream>>>(ids, plans, p);
  MLAI_LAUNCH_CHECK();
  auto_augment_kernel<<<static_cast<unsigned>(p.batch), dev::kBlock, 0, stream>>>(in, out, scratch,
                                                                                  mix, plans, p);
  MLAI_LAUNCH_CHECK();
}

}  // namespace mlai::kernels::cuda
