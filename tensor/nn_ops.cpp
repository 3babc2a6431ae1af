// Validation and dispatch for convolution and pooling (nn_ops.h; batch norm is batchnorm.cpp):
// CUDA tensors go to cuDNN (tensor/cudnn_ops.h; a convolution's bias to bias_act / sum_dim),
// CPU tensors to kernels/. On the CPU,
// float16/bfloat16 tensors are widened to float32, run through the float kernels and rounded once
// at the end: fp16 storage with fp32 arithmetic, as a tensor-core convolution accumulating in fp32
// does.
#include "tensor/nn_ops.h"

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "tensor/cudnn_ops.h"
#include "tensor/nn_checks.h"
#include "tensor/ops.h"

namespace mlai::tensor {

namespace k = mlai::kernels;
using detail::check_devices;
using detail::check_dtype;
using detail::check_floating;
using detail::check_shape;
using detail::is_half;
using detail::to_f32;

namespace {
k::Conv2dGeometry geometry(const Shape& x, const Shape& w, int64_t stride, int64_t pad,
                           int64_t groups) {
  if (groups < 1 || x.size() != 4 || w.size() != 4 || x[3] != w[3] * groups || w[0] % groups != 0 ||
      stride < 1 || pad < 0)
    throw std::invalid_argument(
        "conv2d: input " + shape_str(x) + " (NHWC) and filter " + shape_str(w) +
        " (OHWI) do not fit" +
        (groups == 1 ? std::string() : " in " + std::to_string(groups) + " groups"));
  k::Conv2dGeometry g;
  g.n = x[0];
  g.h = x[1];
  g.w = x[2];
  g.c_in = x[3];
  g.c_out = w[0];
  g.kh = w[1];
  g.kw = w[2];
  g.stride = stride;
  g.pad = pad;
  g.groups = groups;
  if (g.out_h() < 1 || g.out_w() < 1)
    throw std::invalid_argument("conv2d: a " + std::to_string(g.kh) + "x" + std::to_string(g.kw) +
                                " filter does not fit a " + std::to_string(g.h) + "x" +
                                std::to_string(g.w) + " input with padding " + std::to_string(pad));
  return g;
}
Shape out_shape(const k::Conv2dGeometry& g) { return {g.n, g.out_h(), g.out_w(), g.c_out}; }

k::Pool2dGeometry pool_geometry(const Shape& x, int64_t kernel, int64_t stride, int64_t pad) {
  if (x.size() != 4)
    throw std::invalid_argument("maxpool2d: input " + shape_str(x) + " is not NHWC");
  k::Pool2dGeometry g;
  g.n = x[0];
  g.h = x[1];
  g.w = x[2];
  g.c = x[3];
  g.k = kernel;
  g.stride = stride;
  g.pad = pad;
  if (g.out_h() < 1 || g.out_w() < 1 || pad * 2 > kernel)
    throw std::invalid_argument("maxpool2d: window does not fit input " + shape_str(x));
  return g;
}
Shape out_shape(const k::Pool2dGeometry& g) { return {g.n, g.out_h(), g.out_w(), g.c}; }
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t pad,
              int64_t groups) {
  const char* op = "conv2d";
  check_devices(op, {&x, &w, &bias});
  check_floating(op, x);
  check_dtype(op, "the filter", w, x.dtype());
  check_dtype(op, "the bias", bias, x.dtype());
  const auto g = geometry(x.shape(), w.shape(), stride, pad, groups);
  if (bias.defined()) check_shape(op, "the bias", bias, {g.c_out});
  if (x.device().is_cpu() && is_half(x.dtype()))
    return cast(conv2d(to_f32(x), to_f32(w), to_f32(bias), stride, pad, groups), x.dtype());
  Tensor y = Tensor::empty(out_shape(g), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, conv2d_forward(x, w, y, g));
    if (!bias.defined()) return y;
    return bias_act(y.reshape({-1, g.c_out}), bias, false).reshape(y.shape());
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::conv2d_forward<scalar_t>(x.data<scalar_t>(), w.data<scalar_t>(),
                                       bias.defined() ? bias.data<scalar_t>() : nullptr,
                                       y.data<scalar_t>(), g));
  return y;
}

Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape, int64_t stride,
                            int64_t pad, int64_t groups) {
  const char* op = "conv2d backward";
  check_devices(op, {&dy, &w});
  check_floating(op, dy);
  check_dtype(op, "the filter", w, dy.dtype());
  const auto g = geometry(x_shape, w.shape(), stride, pad, groups);
  check_shape(op, "dy", dy, out_shape(g));
  if (dy.device().is_cpu() && is_half(dy.dtype()))
    return cast(conv2d_backward_data(to_f32(dy), to_f32(w), x_shape, stride, pad, groups),
                dy.dtype());
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  if (dy.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, conv2d_backward_data(dy, w, dx, g));
    return dx;
  }
  MLAI_DISPATCH_F32_F64(dy.dtype(), op,
                        k::cpu::conv2d_backward_data<scalar_t>(
                            dy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>(), g));
  return dx;
}

std::pair<Tensor, Tensor> conv2d_backward_filter(const Tensor& x, const Tensor& dy,
                                                 const Shape& w_shape, int64_t stride, int64_t pad,
                                                 bool want_bias, int64_t groups) {
  const char* op = "conv2d backward";
  check_devices(op, {&x, &dy});
  check_floating(op, x);
  check_dtype(op, "dy", dy, x.dtype());
  const auto g = geometry(x.shape(), w_shape, stride, pad, groups);
  check_shape(op, "dy", dy, out_shape(g));
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [dw, db] =
        conv2d_backward_filter(to_f32(x), to_f32(dy), w_shape, stride, pad, want_bias, groups);
    return {cast(dw, x.dtype()), want_bias ? cast(db, x.dtype()) : Tensor()};
  }
  Tensor dw = Tensor::empty(w_shape, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, conv2d_backward_filter(x, dy, dw, g));
    // The bias gradient: a per-channel column sum of dy, deterministic (no atomics).
    return {dw, want_bias ? sum_dim(dy.reshape({-1, g.c_out}), 0) : Tensor()};
  }
  Tensor db = want_bias ? Tensor::empty({g.c_out}, x.dtype(), x.device()) : Tensor();
  MLAI_DISPATCH_F32_F64(x.dtype(), op,
                        k::cpu::conv2d_backward_filter<scalar_t>(
                            x.data<scalar_t>(), dy.data<scalar_t>(), dw.data<scalar_t>(),
                            want_bias ? db.data<scalar_t>() : nullptr, g));
  return {dw, db};
}

std::pair<Tensor, Tensor> maxpool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  const char* op = "maxpool2d";
  check_floating(op, x);
  const auto g = pool_geometry(x.shape(), kernel, stride, pad);
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [y, idx] = maxpool2d(to_f32(x), kernel, stride, pad);
    return {cast(y, x.dtype()), idx};  // exact: the maxima are x's own values
  }
  Tensor y = Tensor::empty(out_shape(g), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, maxpool2d_forward(x, y, g));
    return {y, Tensor()};
  }
  Tensor idx = Tensor::empty(y.shape(), DType::kInt64, x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), op,
                        k::cpu::maxpool2d_forward<scalar_t>(x.data<scalar_t>(), y.data<scalar_t>(),
                                                            idx.data<int64_t>(), g));
  return {y, idx};
}

Tensor maxpool2d_backward(const Tensor& dy, const Tensor& x, const Tensor& y, const Tensor& argmax,
                          const Shape& x_shape, int64_t kernel, int64_t stride, int64_t pad) {
  const char* op = "maxpool2d backward";
  check_devices(op, {&dy, &x, &y, &argmax});
  check_floating(op, dy);
  const auto g = pool_geometry(x_shape, kernel, stride, pad);
  check_shape(op, "dy", dy, out_shape(g));
  if (dy.device().is_cuda()) {
    if (!x.defined() || !y.defined())
      throw std::invalid_argument("maxpool2d backward: the CUDA path needs the forward's x and y");
    check_shape(op, "x", x, x_shape);
    check_shape(op, "y", y, dy.shape());
    check_dtype(op, "x", x, dy.dtype());
    check_dtype(op, "y", y, dy.dtype());
    Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
    MLAI_CUDNN_CALL(op, maxpool2d_backward(dy, x, y, dx, g));
    return dx;
  }
  if (!argmax.defined())
    throw std::invalid_argument("maxpool2d backward: the CPU path needs the forward's argmax");
  check_dtype(op, "argmax", argmax, DType::kInt64);
  check_shape(op, "argmax", argmax, dy.shape());
  if (is_half(dy.dtype()))
    return cast(
        maxpool2d_backward(to_f32(dy), Tensor(), Tensor(), argmax, x_shape, kernel, stride, pad),
        dy.dtype());
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  MLAI_DISPATCH_F32_F64(dy.dtype(), op,
                        k::cpu::maxpool2d_backward<scalar_t>(
                            dy.data<scalar_t>(), argmax.data<int64_t>(), dx.data<scalar_t>(), g));
  return dx;
}
}  // namespace mlai::tensor
