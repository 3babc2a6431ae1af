// Multi-tensor "unscale and check finite" for mixed precision (PyTorch's
// _amp_foreach_non_finite_check_and_unscale_): every gradient is multiplied by inv_scale in
// place, and found_inf is set to 1 if any element of any tensor is inf or nan. With inv_scale
// null it only checks (a read-only pass): the Trainer folds 1/scale into the optimizer instead,
// so fp16 gradients are never unscaled into fp16 (where small ones would round to zero). inv_scale
// and found_inf live on the device (host memory for cpu), so the step needs no host sync. A few
// launches cover all tensors: the CUDA version packs up to kMaxTensorsPerLaunch tensors into the
// kernel's parameters.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

constexpr int kMaxTensorsPerLaunch = 48;

namespace cpu {
template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf);
// GradScaler.update() (PyTorch's _amp_update_scale_), one element, on the device so the step
// needs no host sync: scale = {loss scale, 1/loss scale}. found_inf: scale *= backoff, tracker
// = 0, skipped += 1; else tracker += 1 and at `interval` scale *= growth (if still finite),
// tracker = 0. found_inf is reset to 0 for the next step.
void update_loss_scale(float* scale, int32_t* growth_tracker, int64_t* skipped, float* found_inf,
                       float growth, float backoff, int32_t interval);
// Gradient-norm clipping (torch.nn.utils.clip_grad_norm_), one element on the device: the
// gradients as stored have squared norm *sum_sq; times grad_scale and *inv_scale (null: 1)
// they are the true ones, of norm n. out = inv * min(1, max_norm / (n + 1e-6)): the factor the
// optimizer reads them with (in place of inv_scale), so clipping costs no pass over them.
void clip_norm_factor(const float* sum_sq, const float* inv_scale, float grad_scale, float max_norm,
                      float* out);
// Its first half over a list of tensors: *sum_sq += the sum of the squares of all their
// elements, squared and summed in double (a loss-scaled fp16 gradient squared would overflow
// fp16, and float sums of a whole model lose digits), rounded to float once per call.
template <class T>
void sum_squares(const T* const* tensors, const int64_t* sizes, int count, float* sum_sq);
}  // namespace cpu

namespace cuda {
void update_loss_scale(float* scale, int32_t* growth_tracker, int64_t* skipped, float* found_inf,
                       float growth, float backoff, int32_t interval, StreamHandle stream);
void clip_norm_factor(const float* sum_sq, const float* inv_scale, float grad_scale, float max_norm,
                      float* out, StreamHandle stream);
template <class T>
void unscale_check_finite(T* const* tensors, const int64_t* sizes, int count,
                          const float* inv_scale, float* found_inf, StreamHandle stream);
// Two launches for up to kMaxTensorsPerLaunch tensors: per-block partial sums into `partials`
// (sum_squares_partials(...) doubles of device scratch), then one block adds them in a fixed
// order (deterministic) into *sum_sq.
int64_t sum_squares_partials();
template <class T>
void sum_squares(const T* const* tensors, const int64_t* sizes, int count, float* sum_sq,
                 double* partials, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
