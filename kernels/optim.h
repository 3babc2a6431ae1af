// Fused multi-tensor optimizer steps with PyTorch's semantics (torch.optim.SGD, Adam, AdamW),
// and the layer-wise adaptive LARS and LAMB (timm's semantics, below).
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

// LARS (You, Gitman and Ginsburg, 2017), as timm's Lars and Lightning Bolts' LARS: SGD whose
// step for each tensor is scaled by its trust ratio,
//   d = (clamp(g) + weight_decay * p) * trust_coefficient * |p| / (|g| + weight_decay * |p| + eps)
// (1 where |p| or |g| is 0), then momentum, dampening and Nesterov exactly as sgd_step. With
// trust_clip the ratio becomes min(ratio / lr, 1) (LARC's clipping, timm's trust_clip). A
// tensor whose weight decay is 0 is not adapted (timm and Bolts: biases and batch norm in a
// no-decay group take plain SGD steps), so weight_decay 0 is sgd_step exactly.
struct LarsArgs {
  SgdArgs sgd;  // the step the ratios scale: its rate, momentum, weight decay, step number...
  double trust_coefficient = 0.001, eps = 1e-8;
  bool trust_clip = false;
};

// LAMB (You et al., 2019), as timm's Lamb and apex's FusedLAMB (their global gradient-norm
// clipping aside: that is the trainer's --gradient-clip-val): Adam's bias-corrected moments,
//   u = (m / (1 - beta1^t)) / (sqrt(v) / sqrt(1 - beta2^t) + eps) + weight_decay * p,
//   p -= lr * ratio * u,  ratio = |p| / |u| (1 where either is 0; min(ratio, 1) with trust_clip).
// A tensor whose weight decay is 0 is not adapted (ratio 1), as in timm.
struct LambArgs {
  AdamArgs adam;  // rate, betas, eps, weight decay, step number...; `decoupled` is not read
  bool trust_clip = false;
};

// The CUDA LARS and LAMB steps reduce each tensor's norms in chunks of kTrustChunk elements
// (one block each) into a caller-provided double scratch of trust_scratch_size(sizes, count)
// values (the per-chunk partial sums, then the per-tensor ratios); the CPU ones need none.
constexpr int64_t kTrustChunk = 16384;
inline int64_t trust_scratch_size(const int64_t* sizes, int count) {
  int64_t chunks = 0;
  for (int k = 0; k < count; ++k) chunks += (sizes[k] + kTrustChunk - 1) / kTrustChunk;
  return kMaxOptimTensors + 2 * chunks;
}

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
// Trust ratios from a tensor's norms (in double; both twins round the result to float once).
MLAI_OPTIM_HD float trust_ratio(const LarsArgs& a, double w_norm, double g_norm) {
  if (!(w_norm > 0) || !(g_norm > 0)) return 1.0f;
  double r = a.trust_coefficient * w_norm / (g_norm + w_norm * a.sgd.weight_decay + a.eps);
  if (a.trust_clip) {
    r /= rate_of(a.sgd);
    r = r < 1.0 ? r : 1.0;
  }
  return static_cast<float>(r);
}
MLAI_OPTIM_HD float trust_ratio(const LambArgs& a, double w_norm, double u_norm) {
  if (!(w_norm > 0) || !(u_norm > 0)) return 1.0f;
  double r = w_norm / u_norm;
  if (a.trust_clip) r = r < 1.0 ? r : 1.0;
  return static_cast<float>(r);
}
#undef MLAI_OPTIM_HD

#define MLAI_OPTIM_DECLS(...)                                                                      \
  template <class G>                                                                               \
  void sgd_step(float* const* params, const G* const* grads, G* const* working,                    \
                float* const* momentum, const int64_t* sizes, int count, const SgdArgs& args,      \
                const float* inv_scale, const float* skip_if __VA_ARGS__);                         \
  template <class G>                                                                               \
  void adam_step(float* const* params, const G* const* grads, G* const* working,                   \
                 float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count, \
                 const AdamArgs& args, const float* inv_scale, const float* skip_if __VA_ARGS__);  \
  template <class G>                                                                               \
  void lars_step(float* const* params, const G* const* grads, G* const* working,                   \
                 float* const* momentum, const int64_t* sizes, int count, const LarsArgs& args,    \
                 const float* inv_scale, const float* skip_if, double* scratch __VA_ARGS__);       \
  template <class G>                                                                               \
  void lamb_step(float* const* params, const G* const* grads, G* const* working,                   \
                 float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count, \
                 const LambArgs& args, const float* inv_scale, const float* skip_if,               \
                 double* scratch __VA_ARGS__);

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
