// Convolution, max pooling and batch normalisation on NHWC tensors (the layers of ResNet).
// CPU: kernels/conv.h, pool.h, batchnorm.h; CUDA: cuDNN behind tensor/cudnn_ops.h. Dtypes:
// float32, float64, float16, bfloat16 (the CPU computes half/bf16 in float32, rounding once).
// All tensors of a call must be on one device: a mismatch is an error, never a silent copy.
#pragma once

#include <tuple>

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/pool.h"
#include "tensor/tensor.h"

namespace mlai::tensor {

// x [n, h, w, c_in], w [c_out, kh, kw, c_in / groups] (OHWI), bias [c_out] or undefined;
// groups divides c_in and c_out (torch.nn.Conv2d's groups: c_in = c_out = groups is depthwise).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t pad,
              int64_t groups = 1);
Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape, int64_t stride,
                            int64_t pad, int64_t groups = 1);
// Returns dw (and dbias when want_bias).
std::pair<Tensor, Tensor> conv2d_backward_filter(const Tensor& x, const Tensor& dy,
                                                 const Shape& w_shape, int64_t stride, int64_t pad,
                                                 bool want_bias, int64_t groups = 1);

// y and, on the CPU, the int64 argmax (flat input index per output element); on CUDA the
// argmax is undefined (cuDNN's backward finds the maxima again from x and y).
std::pair<Tensor, Tensor> maxpool2d(const Tensor& x, int64_t k, int64_t stride, int64_t pad);
// CPU reads argmax (x and y may be undefined); CUDA reads x and y (argmax may be undefined).
Tensor maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, const Tensor& argmax,
                          const Shape& x_shape, int64_t k, int64_t stride, int64_t pad);

// Batch norm over the last (channel) dimension of any x with ndim >= 2. gamma, beta, the
// running and saved statistics, dgamma and dbeta are float32 for float16/bfloat16 x and x's
// dtype otherwise. Training mode: y, save_mean, save_inv_std (1/sqrt(biased var + eps));
// running_mean/var (may be undefined: not tracked) updated in place with the unbiased variance.
std::tuple<Tensor, Tensor, Tensor> batchnorm_train(const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, Tensor& running_mean,
                                                   Tensor& running_var, double momentum,
                                                   double eps);
Tensor batchnorm_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                      const Tensor& running_mean, const Tensor& running_var, double eps);
// dx, dgamma, dbeta.
std::tuple<Tensor, Tensor, Tensor> batchnorm_backward(const Tensor& x, const Tensor& dy,
                                                      const Tensor& gamma, const Tensor& save_mean,
                                                      const Tensor& save_inv_std);

// Batch norm with ResNet's epilogue fused in: y = act(bn(x) + z), z (x's shape and dtype) and
// the activation (relu, or MobileNet's relu6; kernels::BnAct, from a bool: relu or none) each
// optional; statistics as above. One pass over x for y instead of three (BN, add, activation),
// and one for dx and dz in backward. On CUDA these run mlai's deterministic kernels.
using kernels::BnAct;
std::tuple<Tensor, Tensor, Tensor> batchnorm_act_train(const Tensor& x, const Tensor& gamma,
                                                       const Tensor& beta, const Tensor& z,
                                                       BnAct act, Tensor& running_mean,
                                                       Tensor& running_var, double momentum,
                                                       double eps);
Tensor batchnorm_act_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& running_mean, const Tensor& running_var, const Tensor& z,
                          BnAct act, double eps);
// y: the training forward's output when it applied an activation, `act` (its mask), else
// undefined. dz (the gradient of z: dy through the mask) only when want_dz.
struct BatchNormGrads {
  Tensor dx, dgamma, dbeta, dz;
};
BatchNormGrads batchnorm_act_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                      const Tensor& save_mean, const Tensor& save_inv_std,
                                      const Tensor& y, bool want_dz, BnAct act = BnAct::kRelu);

}  // namespace mlai::tensor
