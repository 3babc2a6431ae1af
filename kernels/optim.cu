// CUDA fused optimizer steps: each launch covers up to kMaxOptimTensors tensors whose pointers
// and sizes travel in the kernel's parameters; a thread finds its tensor by binary search over
// the size prefix sums (a handful of compares against constant-bank values).
#include <algorithm>
#include <cmath>

#include "kernels/cuda_types.cuh"
#include "kernels/optim.h"

namespace mlai::kernels::cuda {

namespace {
template <class G>
struct Group {
  float* p[kMaxOptimTensors];
  const G* g[kMaxOptimTensors];
  G* w[kMaxOptimTensors];  // working copies (mixed precision), null where none
  float* s1[kMaxOptimTensors];
  float* s2[kMaxOptimTensors];
  int64_t prefix[kMaxOptimTensors + 1];  // prefix[k] = total size of tensors before k
  int count;
};

// As on the CPU: comparisons keep NaN (fminf/fmaxf would replace it by the bound).
__device__ __forceinline__ float clamp(float d, float clip) {
  return d < -clip ? -clip : (d > clip ? clip : d);
}

// The last k in [0, count) with first[k] <= v (first[] not decreasing): the tensor that an
// element (first = the size prefix sums) or a norm chunk (first = the chunk table) belongs to.
__device__ __forceinline__ int last_at_most(const int64_t* first, int count, int64_t v) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first[mid] <= v)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}
template <class G>
__device__ __forceinline__ int find_tensor(const Group<G>& gr, int64_t idx) {
  return last_at_most(gr.prefix, gr.count, idx);
}

// ratios: null, or each tensor's LARS trust ratio (a double per tensor) scaling its step.
template <class G>
__global__ void sgd_kernel(Group<G> gr, SgdArgs a, const float* inv_scale, const float* skip_if,
                           const double* ratios) {
  if (skip_if && *skip_if != 0.0f) return;
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f);
  const float lr = static_cast<float>(rate_of(a)), mom = static_cast<float>(a.momentum),
              damp = static_cast<float>(a.dampening), wd = static_cast<float>(a.weight_decay);
  const bool first = step_of(a) == 1;
  const int64_t total = gr.prefix[gr.count];
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int k = find_tensor(gr, idx);
    const int64_t i = idx - gr.prefix[k];
    float* p = gr.p[k];
    float d = clamp(dev::to_acc(gr.g[k][i]) * gs, a.clip_value);
    if (wd != 0) d += wd * p[i];
    if (ratios) d *= static_cast<float>(ratios[k]);
    if (mom != 0) {
      float* buf = gr.s1[k];
      const float b = first ? d : mom * buf[i] + (1 - damp) * d;
      buf[i] = b;
      d = a.nesterov ? d + mom * b : b;
    }
    const float updated = p[i] - lr * d;
    p[i] = updated;
    if (gr.w[k]) gr.w[k][i] = dev::from_acc<G>(updated);
  }
}

// Adam's step size lr / (1 - beta1^t) and sqrt(1 - beta2^t), in double as on the CPU.
__host__ __device__ inline void adam_bias_terms(const AdamArgs& a, float* step_size,
                                                float* bc2_sqrt) {
  const double t = static_cast<double>(step_of(a));
  *step_size = static_cast<float>(rate_of(a) / (1 - pow(a.beta1, t)));
  *bc2_sqrt = static_cast<float>(sqrt(1 - pow(a.beta2, t)));
}

// Whether the step number or the rate is read on the device.
__host__ __device__ inline bool on_device(const AdamArgs& a) {
  return a.step_offset != nullptr || a.lr_and_step != nullptr;
}

// step_size and bc2_sqrt come from the host, unless the step number or rate is read on the
// device: then each thread works them out (a few double operations, once per thread).
template <class G>
__global__ void adam_kernel(Group<G> gr, AdamArgs a, float step_size, float bc2_sqrt,
                            const float* inv_scale, const float* skip_if) {
  if (skip_if && *skip_if != 0.0f) return;
  if (on_device(a)) adam_bias_terms(a, &step_size, &bc2_sqrt);
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f);
  const float lr = static_cast<float>(rate_of(a)), b1 = static_cast<float>(a.beta1),
              b2 = static_cast<float>(a.beta2), c1 = static_cast<float>(1 - a.beta1),
              c2 = static_cast<float>(1 - a.beta2), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay);
  const int64_t total = gr.prefix[gr.count];
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int k = find_tensor(gr, idx);
    const int64_t i = idx - gr.prefix[k];
    float* p = gr.p[k];
    float d = clamp(dev::to_acc(gr.g[k][i]) * gs, a.clip_value);
    float pv = p[i];
    if (a.decoupled) {
      pv *= 1 - lr * wd;
    } else if (wd != 0) {
      d += wd * pv;
    }
    const float m = b1 * gr.s1[k][i] + c1 * d;
    const float v = b2 * gr.s2[k][i] + c2 * d * d;
    gr.s1[k][i] = m;
    gr.s2[k][i] = v;
    const float updated = pv - step_size * m / (sqrtf(v) / bc2_sqrt + eps);
    p[i] = updated;
    if (gr.w[k]) gr.w[k][i] = dev::from_acc<G>(updated);
  }
}

// --- LARS and LAMB: per-tensor norms in chunks, then ratios, then the step ---------------------
// Chunk c of the launch covers elements [j * kTrustChunk, (j + 1) * kTrustChunk) of tensor k,
// where chunk[k] <= c < chunk[k + 1] and j = c - chunk[k].
struct Chunks {
  int64_t first[kMaxOptimTensors + 1];
};

// Each block's share of the two sums of squares, reduced in a fixed order, to partials[2c],
// partials[2c + 1] (none when partials is null). term(k, i, &x, &y) gives element i of tensor k's
// two values (and may write state: each element is visited by exactly one thread).
template <class G, class Term>
__device__ void chunk_norms(const Group<G>& gr, const Chunks& ch, double* partials, Term term) {
  const int64_t c = blockIdx.x;
  const int k = last_at_most(ch.first, gr.count, c);
  const int64_t n = gr.prefix[k + 1] - gr.prefix[k];
  const int64_t begin = (c - ch.first[k]) * kTrustChunk;
  const int64_t end = begin + kTrustChunk < n ? begin + kTrustChunk : n;
  float x2 = 0, y2 = 0;  // a thread's 64 squares in float, the block's sum in double
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float x, y;
    term(k, i, &x, &y);
    x2 += x * x;
    y2 += y * y;
  }
  if (partials == nullptr) return;  // the same for the whole block
  const double sx = dev::block_sum(static_cast<double>(x2));
  __syncthreads();
  const double sy = dev::block_sum(static_cast<double>(y2));
  if (threadIdx.x == 0) {
    partials[2 * c] = sx;
    partials[2 * c + 1] = sy;
  }
}

template <class G>
__global__ void lars_norms_kernel(Group<G> gr, Chunks ch, SgdArgs a, const float* inv_scale,
                                  const float* skip_if, double* partials) {
  if (skip_if && *skip_if != 0.0f) return;
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f);
  chunk_norms(gr, ch, partials, [&](int k, int64_t i, float* x, float* y) {
    *x = gr.p[k][i];
    *y = clamp(dev::to_acc(gr.g[k][i]) * gs, a.clip_value);
  });
}

// LAMB's bias corrections 1 - beta1^t and sqrt(1 - beta2^t) (double, rounded to float).
__host__ __device__ inline void lamb_bias_terms(const AdamArgs& a, float* bc1, float* bc2_sqrt) {
  const double t = static_cast<double>(step_of(a));
  *bc1 = static_cast<float>(1 - pow(a.beta1, t));
  *bc2_sqrt = static_cast<float>(sqrt(1 - pow(a.beta2, t)));
}

__device__ __forceinline__ float lamb_update(float m, float v, float p, float bc1, float bc2_sqrt,
                                             float eps, float wd) {
  float u = m / bc1 / (sqrtf(v) / bc2_sqrt + eps);
  if (wd != 0) u += wd * p;
  return u;
}

// LAMB's first pass: the new moments, and (with partials) the norms of each master and update.
template <class G>
__global__ void lamb_moments_kernel(Group<G> gr, Chunks ch, AdamArgs a, float bc1, float bc2_sqrt,
                                    const float* inv_scale, const float* skip_if,
                                    double* partials) {
  if (skip_if && *skip_if != 0.0f) return;
  if (on_device(a)) lamb_bias_terms(a, &bc1, &bc2_sqrt);
  const float gs = a.grad_scale * (inv_scale ? *inv_scale : 1.0f);
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2),
              c1 = static_cast<float>(1 - a.beta1), c2 = static_cast<float>(1 - a.beta2),
              eps = static_cast<float>(a.eps), wd = static_cast<float>(a.weight_decay);
  chunk_norms(gr, ch, partials, [&](int k, int64_t i, float* x, float* y) {
    const float d = clamp(dev::to_acc(gr.g[k][i]) * gs, a.clip_value);
    const float m = b1 * gr.s1[k][i] + c1 * d;
    const float v = b2 * gr.s2[k][i] + c2 * d * d;
    gr.s1[k][i] = m;
    gr.s2[k][i] = v;
    *x = gr.p[k][i];
    *y = lamb_update(m, v, *x, bc1, bc2_sqrt, eps, wd);
  });
}

// One block per tensor: its chunks' partial sums in a fixed order, then its trust ratio.
template <class Args, class G>
__global__ void trust_ratio_kernel(Group<G> gr, Chunks ch, Args a, const float* skip_if,
                                   const double* partials, double* ratios) {
  if (skip_if && *skip_if != 0.0f) return;
  const int k = blockIdx.x;
  double x2 = 0, y2 = 0;
  for (int64_t c = ch.first[k] + threadIdx.x; c < ch.first[k + 1]; c += blockDim.x) {
    x2 += partials[2 * c];
    y2 += partials[2 * c + 1];
  }
  x2 = dev::block_sum(x2);
  __syncthreads();
  y2 = dev::block_sum(y2);
  if (threadIdx.x == 0) ratios[k] = trust_ratio(a, sqrt(x2), sqrt(y2));
}

template <class G>
__global__ void lamb_apply_kernel(Group<G> gr, AdamArgs a, float bc1, float bc2_sqrt,
                                  const float* skip_if, const double* ratios) {
  if (skip_if && *skip_if != 0.0f) return;
  if (on_device(a)) lamb_bias_terms(a, &bc1, &bc2_sqrt);
  const float lr = static_cast<float>(rate_of(a)), eps = static_cast<float>(a.eps),
              wd = static_cast<float>(a.weight_decay);
  const int64_t total = gr.prefix[gr.count];
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int k = find_tensor(gr, idx);
    const int64_t i = idx - gr.prefix[k];
    float* p = gr.p[k];
    const float r = ratios ? static_cast<float>(ratios[k]) : 1.0f;
    const float updated =
        p[i] - lr * (lamb_update(gr.s1[k][i], gr.s2[k][i], p[i], bc1, bc2_sqrt, eps, wd) * r);
    p[i] = updated;
    if (gr.w[k]) gr.w[k][i] = dev::from_acc<G>(updated);
  }
}

// The launch's chunk table.
template <class G>
Chunks chunks_of(const Group<G>& gr) {
  Chunks ch{};
  for (int k = 0; k < gr.count; ++k)
    ch.first[k + 1] =
        ch.first[k] + (gr.prefix[k + 1] - gr.prefix[k] + kTrustChunk - 1) / kTrustChunk;
  return ch;
}

__global__ void ema_kernel(Group<float> gr, float decay, float one_minus_decay) {
  const int64_t total = gr.prefix[gr.count];
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int k = find_tensor(gr, idx);
    const int64_t i = idx - gr.prefix[k];
    // Rounded products and sum as on the CPU: no contraction into an FMA.
    gr.p[k][i] = __fadd_rn(__fmul_rn(decay, gr.p[k][i]), __fmul_rn(one_minus_decay, gr.g[k][i]));
  }
}

template <class G, class Launch>
void for_each_group(float* const* params, const G* const* grads, G* const* working,
                    float* const* s1, float* const* s2, const int64_t* sizes, int count,
                    Launch launch) {
  for (int start = 0; start < count; start += kMaxOptimTensors) {
    Group<G> gr{};
    gr.count = std::min(kMaxOptimTensors, count - start);
    gr.prefix[0] = 0;
    for (int k = 0; k < gr.count; ++k) {
      gr.p[k] = params[start + k];
      gr.g[k] = grads[start + k];
      gr.w[k] = working ? working[start + k] : nullptr;
      gr.s1[k] = s1 ? s1[start + k] : nullptr;
      gr.s2[k] = s2 ? s2[start + k] : nullptr;
      gr.prefix[k + 1] = gr.prefix[k] + sizes[start + k];
    }
    if (gr.prefix[gr.count] > 0) launch(gr);
  }
}
}  // namespace

namespace {
// SGD's launches, each after its trust ratios when `lars` is given and adapts (weight decay not
// 0). Launches are serialized on the stream, so every launch group reuses the scratch's start:
// its ratios first, then its chunks' partial sums.
template <class G>
void sgd_launches(float* const* params, const G* const* grads, G* const* working,
                  float* const* momentum, const int64_t* sizes, int count, const SgdArgs& s,
                  const LarsArgs* lars, const float* inv_scale, const float* skip_if,
                  double* scratch, StreamHandle stream) {
  const bool adapt = lars != nullptr && s.weight_decay != 0;
  for_each_group<G>(params, grads, working, s.momentum != 0 ? momentum : nullptr, nullptr, sizes,
                    count, [&](const Group<G>& gr) {
                      double* ratios = adapt ? scratch : nullptr;
                      if (adapt) {
                        const Chunks ch = chunks_of(gr);
                        double* partials = scratch + kMaxOptimTensors;
                        lars_norms_kernel<G>
                            <<<static_cast<unsigned>(ch.first[gr.count]), dev::kBlock, 0, stream>>>(
                                gr, ch, s, inv_scale, skip_if, partials);
                        MLAI_LAUNCH_CHECK();
                        trust_ratio_kernel<LarsArgs, G><<<gr.count, dev::kBlock, 0, stream>>>(
                            gr, ch, *lars, skip_if, partials, ratios);
                        MLAI_LAUNCH_CHECK();
                      }
                      sgd_kernel<G>
                          <<<dev::grid_size(gr.prefix[gr.count]), dev::kBlock, 0, stream>>>(
                              gr, s, inv_scale, skip_if, ratios);
                      MLAI_LAUNCH_CHECK();
                    });
}
}  // namespace

template <class G>
void sgd_step(float* const* params, const G* const* grads, G* const* working,
              float* const* momentum, const int64_t* sizes, int count, const SgdArgs& args,
              const float* inv_scale, const float* skip_if, StreamHandle stream) {
  sgd_launches(params, grads, working, momentum, sizes, count, args, nullptr, inv_scale, skip_if,
               nullptr, stream);
}

template <class G>
void lars_step(float* const* params, const G* const* grads, G* const* working,
               float* const* momentum, const int64_t* sizes, int count, const LarsArgs& args,
               const float* inv_scale, const float* skip_if, double* scratch, StreamHandle stream) {
  sgd_launches(params, grads, working, momentum, sizes, count, args.sgd, &args, inv_scale, skip_if,
               scratch, stream);
}

template <class G>
void lamb_step(float* const* params, const G* const* grads, G* const* working,
               float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count,
               const LambArgs& args, const float* inv_scale, const float* skip_if, double* scratch,
               StreamHandle stream) {
  const AdamArgs& a = args.adam;
  float bc1 = 0, bc2_sqrt = 0;
  if (!on_device(a)) lamb_bias_terms(a, &bc1, &bc2_sqrt);
  const bool adapt = a.weight_decay != 0;
  for_each_group<G>(
      params, grads, working, exp_avg, exp_avg_sq, sizes, count, [&](const Group<G>& gr) {
        const Chunks ch = chunks_of(gr);
        double* ratios = adapt ? scratch : nullptr;
        double* partials = adapt ? scratch + kMaxOptimTensors : nullptr;
        lamb_moments_kernel<G>
            <<<static_cast<unsigned>(ch.first[gr.count]), dev::kBlock, 0, stream>>>(
                gr, ch, a, bc1, bc2_sqrt, inv_scale, skip_if, partials);
        MLAI_LAUNCH_CHECK();
        if (adapt) {
          trust_ratio_kernel<LambArgs, G>
              <<<gr.count, dev::kBlock, 0, stream>>>(gr, ch, args, skip_if, partials, ratios);
          MLAI_LAUNCH_CHECK();
        }
        lamb_apply_kernel<G><<<dev::grid_size(gr.prefix[gr.count]), dev::kBlock, 0, stream>>>(
            gr, a, bc1, bc2_sqrt, skip_if, ratios);
        MLAI_LAUNCH_CHECK();
      });
}

template <class G>
void adam_step(float* const* params, const G* const* grads, G* const* working,
               float* const* exp_avg, float* const* exp_avg_sq, const int64_t* sizes, int count,
               const AdamArgs& args, const float* inv_scale, const float* skip_if,
               StreamHandle stream) {
  float step_size = 0, bc2_sqrt = 0;
  if (!on_device(args)) adam_bias_terms(args, &step_size, &bc2_sqrt);
  for_each_group<G>(params, grads, working, exp_avg, exp_avg_sq, sizes, count,
                    [&](const Group<G>& gr) {
                      adam_kernel<G><<<dev::grid_size(gr.prefix[gr.count]), dev::kBlock, 0,
                                       stream>>>(gr, args, step_size, bc2_sqrt, inv_scale,
                                                 skip_if);
                      MLAI_LAUNCH_CHECK();
                    });
}

void ema_update(float* const* avg, const float* const* cur, const int64_t* sizes, int count,
                float decay, float one_minus_decay, StreamHandle stream) {
  for_each_group<float>(avg, cur, nullptr, nullptr, nullptr, sizes, count,
                        [&](const Group<float>& gr) {
                          ema_kernel<<<dev::grid_size(gr.prefix[gr.count]), dev::kBlock, 0,
                                       stream>>>(gr, decay, one_minus_decay);
                          MLAI_LAUNCH_CHECK();
                        });
}

#define MLAI_INSTANTIATE(G)                                                                     \
  template void sgd_step<G>(float* const*, const G* const*, G* const*, float* const*,           \
                            const int64_t*, int, const SgdArgs&, const float*, const float*,    \
                            StreamHandle);                                                      \
  template void adam_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             float* const*, const int64_t*, int, const AdamArgs&, const float*, \
                             const float*, StreamHandle);                                       \
  template void lars_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             const int64_t*, int, const LarsArgs&, const float*, const float*,  \
                             double*, StreamHandle);                                            \
  template void lamb_step<G>(float* const*, const G* const*, G* const*, float* const*,          \
                             float* const*, const int64_t*, int, const LambArgs&, const float*, \
                             const float*, double*, StreamHandle);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cuda
