// Validation and dispatch for the NHWC layer ops (see nn_ops.h).
#include "tensor/nn_ops.h"

#include <stdexcept>

#include "kernels/batchnorm.h"

namespace mlai::tensor {

namespace k = mlai::kernels;

namespace {
void require_cpu(const char* op, const Tensor& t) {
  if (!t.device().is_cpu())
    throw std::runtime_error(std::string(op) + " on " + t.device().str() +
                             ": the cuDNN path is not built yet (CPU only for now)");
}
// float32 or float64, on the CPU.
#define MLAI_DISPATCH_F32_F64(DT, OP, ...)          \
  switch (DT) {                                     \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__) \
    MLAI_DISPATCH_CASE(kFloat64, double, __VA_ARGS__) \
    default:                                        \
      throw_bad_dtype(OP, DT);                      \
  }

k::Conv2dGeometry geometry(const Shape& x, const Shape& w, int64_t stride, int64_t pad) {
  if (x.size() != 4 || w.size() != 4 || x[3] != w[3] || stride < 1 || pad < 0)
    throw std::invalid_argument("conv2d: input " + shape_str(x) + " (NHWC) and filter " +
                                shape_str(w) + " (OHWI) do not fit");
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
  if (g.out_h() < 1 || g.out_w() < 1)
    throw std::invalid_argument("conv2d: a " + std::to_string(g.kh) + "x" + std::to_string(g.kw) +
                                " filter does not fit a " + std::to_string(g.h) + "x" +
                                std::to_string(g.w) + " input with padding " + std::to_string(pad));
  return g;
}

k::Pool2dGeometry pool_geometry(const Shape& x, int64_t kernel, int64_t stride, int64_t pad) {
  if (x.size() != 4) throw std::invalid_argument("maxpool2d: input " + shape_str(x) + " is not NHWC");
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
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t pad) {
  require_cpu("conv2d", x);
  const auto g = geometry(x.shape(), w.shape(), stride, pad);
  Tensor y = Tensor::empty({g.n, g.out_h(), g.out_w(), g.c_out}, x.dtype(), x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), "conv2d",
                        k::cpu::conv2d_forward<scalar_t>(
                            x.data<scalar_t>(), w.data<scalar_t>(),
                            bias.defined() ? bias.data<scalar_t>() : nullptr,
                            y.data<scalar_t>(), g));
  return y;
}

Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape,
                            int64_t stride, int64_t pad) {
  require_cpu("conv2d backward", dy);
  const auto g = geometry(x_shape, w.shape(), stride, pad);
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  MLAI_DISPATCH_F32_F64(dy.dtype(), "conv2d backward",
                        k::cpu::conv2d_backward_data<scalar_t>(
                            dy.data<scalar_t>(), w.data<scalar_t>(), dx.data<scalar_t>(), g));
  return dx;
}

std::pair<Tensor, Tensor> conv2d_backward_filter(const Tensor& x, const Tensor& dy,
                                                 const Shape& w_shape, int64_t stride,
                                                 int64_t pad, bool want_bias) {
  require_cpu("conv2d backward", x);
  const auto g = geometry(x.shape(), w_shape, stride, pad);
  Tensor dw = Tensor::empty(w_shape, x.dtype(), x.device());
  Tensor db = want_bias ? Tensor::empty({g.c_out}, x.dtype(), x.device()) : Tensor();
  MLAI_DISPATCH_F32_F64(x.dtype(), "conv2d backward",
                        k::cpu::conv2d_backward_filter<scalar_t>(
                            x.data<scalar_t>(), dy.data<scalar_t>(), dw.data<scalar_t>(),
                            want_bias ? db.data<scalar_t>() : nullptr, g));
  return {dw, db};
}

std::pair<Tensor, Tensor> maxpool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  require_cpu("maxpool2d", x);
  const auto g = pool_geometry(x.shape(), kernel, stride, pad);
  Tensor y = Tensor::empty({g.n, g.out_h(), g.out_w(), g.c}, x.dtype(), x.device());
  Tensor idx = Tensor::empty(y.shape(), DType::kInt64, x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), "maxpool2d",
                        k::cpu::maxpool2d_forward<scalar_t>(x.data<scalar_t>(),
                                                            y.data<scalar_t>(),
                                                            idx.data<int64_t>(), g));
  return {y, idx};
}

Tensor maxpool2d_backward(const Tensor& dy, const Tensor& argmax, const Shape& x_shape,
                          int64_t kernel, int64_t stride, int64_t pad) {
  require_cpu("maxpool2d backward", dy);
  const auto g = pool_geometry(x_shape, kernel, stride, pad);
  Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
  MLAI_DISPATCH_F32_F64(dy.dtype(), "maxpool2d backward",
                        k::cpu::maxpool2d_backward<scalar_t>(dy.data<scalar_t>(),
                                                             argmax.data<int64_t>(),
                                                             dx.data<scalar_t>(), g));
  return dx;
}

namespace {
void check_bn(const Tensor& x, const Tensor& p) {
  if (x.ndim() < 2 || p.ndim() != 1 || p.size(0) != x.size(-1) || p.dtype() != x.dtype())
    throw std::invalid_argument("batchnorm: input " + x.str() + " with channel parameters " +
                                p.str());
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> batchnorm_train(const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, Tensor& running_mean,
                                                   Tensor& running_var, double momentum,
                                                   double eps) {
  require_cpu("batchnorm", x);
  check_bn(x, gamma);
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({c}, x.dtype(), x.device());
  Tensor inv_std = Tensor::empty({c}, x.dtype(), x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), "batchnorm",
                        k::cpu::batchnorm_forward_train<scalar_t>(
                            x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(),
                            y.data<scalar_t>(), running_mean.data<scalar_t>(),
                            running_var.data<scalar_t>(), mean.data<scalar_t>(),
                            inv_std.data<scalar_t>(), rows, c, momentum, eps));
  return {y, mean, inv_std};
}

Tensor batchnorm_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                      const Tensor& running_mean, const Tensor& running_var, double eps) {
  require_cpu("batchnorm", x);
  check_bn(x, gamma);
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), "batchnorm",
                        k::cpu::batchnorm_forward_eval<scalar_t>(
                            x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(),
                            running_mean.data<scalar_t>(), running_var.data<scalar_t>(),
                            y.data<scalar_t>(), rows, c, eps));
  return y;
}

std::tuple<Tensor, Tensor, Tensor> batchnorm_backward(const Tensor& x, const Tensor& dy,
                                                      const Tensor& gamma,
                                                      const Tensor& save_mean,
                                                      const Tensor& save_inv_std) {
  require_cpu("batchnorm backward", x);
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor dgamma = Tensor::empty({c}, x.dtype(), x.device());
  Tensor dbeta = Tensor::empty({c}, x.dtype(), x.device());
  MLAI_DISPATCH_F32_F64(x.dtype(), "batchnorm backward",
                        k::cpu::batchnorm_backward<scalar_t>(
                            x.data<scalar_t>(), dy.data<scalar_t>(), gamma.data<scalar_t>(),
                            save_mean.data<scalar_t>(), save_inv_std.data<scalar_t>(),
                            dx.data<scalar_t>(), dgamma.data<scalar_t>(), dbeta.data<scalar_t>(),
                            rows, c));
  return {dx, dgamma, dbeta};
}

}  // namespace mlai::tensor
