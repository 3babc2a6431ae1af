// Convolution, max pooling and batch normalisation on NHWC tensors (the layers of ResNet).
// CPU: kernels/conv.h, pool.h, batchnorm.h. CUDA: planned through cuDNN behind one small
// interface; until then a CUDA tensor is a clear error, never a silent copy to the CPU.
#pragma once

#include <tuple>

#include "kernels/conv.h"
#include "kernels/pool.h"
#include "tensor/tensor.h"

namespace mlai::tensor {

// x [n, h, w, c_in], w [c_out, kh, kw, c_in] (OHWI), bias [c_out] or undefined.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t pad);
Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                            int64_t stride, int64_t pad);
// Returns dw (and dbias when want_bias).
std::pair<Tensor, Tensor> conv2d_backward_filter(const Tensor& x, const Tensor& dy,
                                                 const Shape& w_shape, int64_t stride,
                                                 int64_t pad, bool want_bias);

// y and the int64 argmax (flat input index per output element).
std::pair<Tensor, Tensor> maxpool2d(const Tensor& x, int64_t k, int64_t stride, int64_t pad);
Tensor maxpool2d_backward(const Tensor& dy, const Tensor& argmax, const Shape& x_shape,
                          int64_t k, int64_t stride, int64_t pad);

// Training mode: y, save_mean, save_inv_std; running_mean/var updated in place.
std::tuple<Tensor, Tensor, Tensor> batchnorm_train(const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, Tensor& running_mean,
                                                   Tensor& running_var, double momentum,
                                                   double eps);
Tensor batchnorm_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                      const Tensor& running_mean, const Tensor& running_var, double eps);
// dx, dgamma, dbeta.
std::tuple<Tensor, Tensor, Tensor> batchnorm_backward(const Tensor& x, const Tensor& dy,
                                                      const Tensor& gamma,
                                                      const Tensor& save_mean,
                                                      const Tensor& save_inv_std);

}  // namespace mlai::tensor
