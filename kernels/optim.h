// Fused multi-tensor optimizer steps with PyTorch's semantics (torch.optim.SGD, Adam, AdamW).
// One call updates `count` float32 master tensors (the CUDA version in launches of up to
// kMaxOptimTensors), reading each gradient (type G: float, or Half/BFloat16 for mixed
// precision) in float times grad_scale (1/world_size for data parallel) and, when inv_scale is
// non-null, times *inv_scale (a device value: 1/loss_scale for mixed precision). Scaling here
// costs no extra pass and never rounds a small unscaled gradient to fp16 zero. When working is
// non-null, working[t] (may be null per tensor) receives the updated master rounded to G: the
// fp16/bf16 copy the next forward uses, refreshed in the same pass. When skip_if is non-null
// and *skip_if != 0 (the AMP finite check's device flag), nothing changes: no host sync.
// The step's number (SGD's first momentum step, Adam's bias correction) is args.step, less
// *args.step_offset when that is non-null: a device count the kernel reads when it runs (the
// AMP scaler's skipped steps, which a skipped step adds to on the device), so that the host
// need not wait for the previous step to know which step this one is. When args.lr_and_step is
// non-null, the rate and the step number are read from there on the device too (a step
// captured into a CUDA graph then runs each replay with the values written before it).
#pragma once

#include <cstdint>
#include <limits>

#include "kernels/common.h"

namespace mlai::kernels {

constexpr int kMaxOptimTensors = 24;

// clip_value: each (scaled) gradient element is clamped to [-clip_value, clip_value] before
// weight decay, as torch.nn.utils.clip_grad_value_ (Lightning's gradient_clip_algorithm
// "value"); infinity (the default) clamps nothing and costs a min and a max.
struct SgdArgs {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  int64_t step = 1;  // 1-based; step 1 initialises the momentum buffer to the gradient
  const int64_t* step_offset = nullptr;  // device value subtracted from step (see above)
  const double* lr_and_step = nullptr;   // device {lr, step} replacing lr and step (see above)
  float grad_scale = 1.0f;
  float clip_value = std::numeric_limits<float>::infinity();
};

struct AdamArgs {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // AdamW: p *= 1 - lr * weight_decay; Adam: g += weight_decay * p
  int64_t step = 1;        // 1-based, for bias correction
  const int64_t* step_offset = nullptr;  // device value subtracted from step (see above)
  const double* lr_and_step = nullptr;   // device {lr, step} replacing lr and step (see above)
  float grad_scale = 1.0f;
  float clip_value = std::numeric_limits<float>::infinity();
};

#if defined(__CUDACC__)
#define MLAI_OPTIM_HD __host__ __device__ __forceinline__
#else
#define MLAI_OPTIM_HD inline
#endif
// The rate and the step number a step runs with (read where the kernel runs).
template <class Args>
MLAI_OPTIM_HD double rate_of(const Args& a) {
  return a.lr_and_step ? a.lr_and_step[0] : a.lr;
}
template <class Args>
MLAI_OPTIM_HD int64_t step_of(const Args& a) {
  return (a.lr_and_step ? static_cast<int64_t>(a.lr_and_step[1]) : a.step) -
         (a.step_offset ? *a.step_offset : 0);
}
#undef MLAI_OPTIM_HD

#define MLAI_OPTIM_DECLS(...)                                                                 \
  template <class G>                                                                          \
  void sgd_step(float* const* params, const G* const* grads, G* const* working,               \
                float* const* momentum, const int64_t* sizes, int count, const SgdArgs& args, \
                const float* inv_scale, const float* skip_if __VA_ARGS__);                    \
  template <class G>                                                                          \
  void adam_step(float* const* params, const G* const* grads, G* const* working,              \
                 float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes,       \
                 int count, const AdamArgs& args, const float* inv_scale,                     \
                 const float* skip_if __VA_ARGS__);

// The exponential moving average of weights (torch.optim.swa_utils.get_ema_avg_fn, what
// Lightning's EMA weight averaging uses): for each of `count` float32 tensors,
// avg = decay * avg + one_minus_decay * cur, each product rounded to float before the sum as
// in PyTorch's tensor arithmetic (no fused multiply-add, so the CPU and GPU agree).
#define MLAI_EMA_DECLS(...)                                                                   \
  void ema_update(float* const* avg, const float* const* cur, const int64_t* sizes, int count, \
                  float decay, float one_minus_decay __VA_ARGS__);

namespace cpu {
MLAI_EMA_DECLS()
MLAI_OPTIM_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_EMA_DECLS(, StreamHandle stream)
MLAI_OPTIM_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_EMA_DECLS
#undef MLAI_OPTIM_DECLS

}  // namespace mlai::kernels
