// CUDA automatic augmentation: a first kernel draws each sample's plan (the CPU twin's), then
// one thread block per image runs its operations in turn (scratch and output alternate), with
// the whole-image statistics (grayscale sum, per-channel min/max, histograms) gathered in shared
// memory by integer atomics, so every value matches the CPU twin's.
#include "kernels/auto_augment.h"
#include "kernels/cuda_types.cuh"

namespace mlai::kernels::cuda {

namespace {
__global__ void plan_kernel(const int64_t* ids, AutoAugmentPlan* plans, AutoAugmentParams p) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < p.batch) plans[b] = auto_augment_plan(p, ids[b]);
}

__global__ void auto_augment_kernel(const uint8_t* in, uint8_t* out, uint8_t* scratch,
                                    const AutoAugmentPlan* plans, AutoAugmentParams p) {
  const int64_t H = p.height, W = p.width, C = p.channels, n = H * W, image = n * C;
  const int64_t s = blockIdx.x;
  // (raw storage: ImageStats's member initializers are not allowed on shared memory)
  __shared__ alignas(ImageStats) unsigned char st_storage[sizeof(ImageStats)];
  ImageStats& st = *reinterpret_cast<ImageStats*>(st_storage);
  __shared__ int32_t hist[kMaxAugmentChannels][256];
  __shared__ unsigned long long gray_sum;
  const AutoAugmentPlan plan = plans[s];
  const uint8_t* src = in + s * image;
  uint8_t* dst = out + s * image;
  if (plan.count == 0) {
    for (int64_t i = threadIdx.x; i < image; i += blockDim.x) dst[i] = src[i];
    return;
  }
  for (int32_t k = 0; k < plan.count; ++k) {
    const AugOp op = plan.ops[k];
    // Two scratch images would be needed for three or more operations: the output serves as
    // the second (the last operation writes it, reading the scratch image).
    uint8_t* to =
        k == plan.count - 1 ? dst : ((plan.count - 1 - k) % 2 == 1 ? scratch + s * image : dst);
    if (op_needs_stats(op.kind)) {
      for (int i = threadIdx.x; i < kMaxAugmentChannels * 256; i += blockDim.x)
        hist[i / 256][i % 256] = 0;
      if (threadIdx.x < kMaxAugmentChannels) {
        st.lo[threadIdx.x] = 255;
        st.hi[threadIdx.x] = 0;
      }
      if (threadIdx.x == 0) gray_sum = 0;
      __syncthreads();
      if (op.kind == AugOpKind::kContrast) {
        unsigned long long local = 0;
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
          local += static_cast<unsigned long long>(C == 3 ? gray_of(src + i * C) : src[i * C]);
        atomicAdd(&gray_sum, local);
      } else if (op.kind == AugOpKind::kAutoContrast) {
        for (int64_t i = threadIdx.x; i < image; i += blockDim.x) {
          atomicMin(&st.lo[i % C], static_cast<int32_t>(src[i]));
          atomicMax(&st.hi[i % C], static_cast<int32_t>(src[i]));
        }
      } else {
        for (int64_t i = threadIdx.x; i < image; i += blockDim.x)
          atomicAdd(&hist[i % C][src[i]], 1);
      }
      __syncthreads();
      if (op.kind == AugOpKind::kContrast && threadIdx.x == 0)
        st.mean = __fdiv_rn(static_cast<float>(gray_sum), static_cast<float>(n));
      if (op.kind == AugOpKind::kEqualize && threadIdx.x < C)
        equalize_lut(hist[threadIdx.x], st.lut[threadIdx.x]);
      __syncthreads();
    }
    for (int64_t i = threadIdx.x; i < image; i += blockDim.x) {
      const int64_t c = i % C, x = (i / C) % W, y = i / (C * W);
      to[i] = apply_op_at(src, H, W, C, y, x, c, op, st);
    }
    __syncthreads();  // the next operation reads the whole image
    src = to;
  }
}
}  // namespace

void auto_augment(const uint8_t* in, const int64_t* ids, uint8_t* out, uint8_t* scratch,
                  AutoAugmentPlan* plans, const AutoAugmentParams& p, StreamHandle stream) {
  if (p.batch == 0) return;
  constexpr int kPlanBlock = 128;
  plan_kernel<<<static_cast<unsigned>((p.batch + kPlanBlock - 1) / kPlanBlock), kPlanBlock, 0,
                stream>>>(ids, plans, p);
  MLAI_LAUNCH_CHECK();
  auto_augment_kernel<<<static_cast<unsigned>(p.batch), dev::kBlock, 0, stream>>>(in, out, scratch,
                                                                                  plans, p);
  MLAI_LAUNCH_CHECK();
}

}  // namespace mlai::kernels::cuda
