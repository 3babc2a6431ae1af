// Every cuDNN call in mlai goes through these functions (implemented in cudnn_ops_cuda.cpp, the
// only file besides handles_cuda.cpp that includes cudnn.h): moving from the legacy descriptor
// API, deprecated in cuDNN 9, to the graph API later changes that one file.
// Contract: contiguous NHWC tensors (OHWI filters) on one CUDA device, outputs allocated by the
// caller (tensor/nn_ops.cpp, which validates shapes, dtypes and devices) and overwritten; work is
// enqueued on the current stream of that device. No CUDA header here: harmless in a CPU build,
// where nothing calls these (nn_ops.cpp calls them only under MLAI_WITH_CUDA).
#pragma once

#include "kernels/conv.h"
#include "kernels/pool.h"
#include "tensor/tensor.h"

namespace mlai::tensor::cudnn {

// Convolutions pick their algorithm once per shape (cudnnFind*AlgorithmEx, cached per device,
// dtype, geometry, operand alignment and deterministic()). No bias here: nn_ops.cpp adds it and
// reduces its gradient with mlai's own kernels (bias_act, sum_dim), the CPU twin's arithmetic in
// every dtype, where cudnnAddTensor / cudnnConvolutionBackwardBias leave bf16 support uncertain.
void conv2d_forward(const Tensor& x, const Tensor& w, Tensor& y, const kernels::Conv2dGeometry& g);
void conv2d_backward_data(const Tensor& dy, const Tensor& w, Tensor& dx,
                          const kernels::Conv2dGeometry& g);
void conv2d_backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw,
                            const kernels::Conv2dGeometry& g);

// Max pooling; the backward reads x and y (cuDNN finds the maxima again) instead of an argmax.
void maxpool2d_forward(const Tensor& x, Tensor& y, const kernels::Pool2dGeometry& g);
void maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, Tensor& dx,
                        const kernels::Pool2dGeometry& g);

// Spatial batch norm over channels-last x (last dim = channels). Parameters and statistics are
// float32 for half/bf16 x, x's dtype otherwise; running_mean/var may be undefined (not tracked).
void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                             Tensor& running_mean, Tensor& running_var, Tensor& save_mean,
                             Tensor& save_inv_std, double momentum, double eps);
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                            double eps);
// dgamma and dbeta are overwritten (not accumulated), like the CPU kernel.
void batchnorm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                        const Tensor& save_mean, const Tensor& save_inv_std, Tensor& dx,
                        Tensor& dgamma, Tensor& dbeta);

}  // namespace mlai::tensor::cudnn
