// Validation and dispatch for the NHWC layer ops (see nn_ops.h): CUDA tensors go to cuDNN
// (tensor/cudnn_ops.h), CPU tensors to kernels/. On the CPU, float16/bfloat16 tensors are
// widened to float32, run through the float kernels and rounded once at the end: fp16 storage
// with fp32 arithmetic, as a tensor-core convolution accumulating in fp32 does.
#include "tensor/nn_ops.h"

#include <initializer_list>
#include <stdexcept>
#include <string>

#include "kernels/batchnorm.h"
#include "tensor/cudnn_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {

namespace k = mlai::kernels;

// The cuDNN call in a CUDA build. A CPU-only build cannot make CUDA tensors, but should one
// arrive anyway it gets a clear error, never a silent copy to the CPU.
#ifdef MLAI_WITH_CUDA
#define MLAI_CUDNN_CALL(OP, CALL) cudnn::CALL
#else
#define MLAI_CUDNN_CALL(OP, CALL) \
  throw std::runtime_error(std::string(OP) + ": mlai was built without CUDA (-DMLAI_CUDA=OFF)")
#endif

namespace {
// float32 or float64, on the CPU.
#define MLAI_DISPATCH_F32_F64(DT, OP, ...)            \
  switch (DT) {                                       \
    MLAI_DISPATCH_CASE(kFloat32, float, __VA_ARGS__)  \
    MLAI_DISPATCH_CASE(kFloat64, double, __VA_ARGS__) \
    default:                                          \
      throw_bad_dtype(OP, DT);                        \
  }

bool is_half(DType dt) { return dt == DType::kFloat16 || dt == DType::kBFloat16; }
Tensor to_f32(const Tensor& t) { return t.defined() ? cast(t, DType::kFloat32) : Tensor(); }

// Every defined tensor on the device of the first one.
void check_devices(const char* op, std::initializer_list<const Tensor*> ts) {
  const Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    if (t->defined() && t->device() != d)
      throw std::invalid_argument(std::string(op) + ": tensors on different devices (" + d.str() +
                                  " and " + t->device().str() + ")");
}

void check_dtype(const char* op, const char* what, const Tensor& t, DType want) {
  if (t.defined() && t.dtype() != want)
    throw std::invalid_argument(std::string(op) + ": " + what + " is " + dtype_name(t.dtype()) +
                                ", expected " + dtype_name(want));
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& want) {
  if (t.shape() != want)
    throw std::invalid_argument(std::string(op) + ": " + what + " is " + shape_str(t.shape()) +
                                ", expected " + shape_str(want));
}

void check_floating(const char* op, const Tensor& x) {
  if (!is_floating(x.dtype())) throw_bad_dtype(op, x.dtype());
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

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int64_t stride, int64_t pad) {
  const char* op = "conv2d";
  check_devices(op, {&x, &w, &bias});
  check_floating(op, x);
  check_dtype(op, "the filter", w, x.dtype());
  check_dtype(op, "the bias", bias, x.dtype());
  const auto g = geometry(x.shape(), w.shape(), stride, pad);
  if (bias.defined()) check_shape(op, "the bias", bias, {g.c_out});
  if (x.device().is_cpu() && is_half(x.dtype()))
    return cast(conv2d(to_f32(x), to_f32(w), to_f32(bias), stride, pad), x.dtype());
  Tensor y = Tensor::empty(out_shape(g), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, conv2d_forward(x, w, bias, y, g));
    return y;
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::conv2d_forward<scalar_t>(x.data<scalar_t>(), w.data<scalar_t>(),
                                       bias.defined() ? bias.data<scalar_t>() : nullptr,
                                       y.data<scalar_t>(), g));
  return y;
}

Tensor conv2d_backward_data(const Tensor& dy, const Tensor& w, const Shape& x_shape, int64_t stride,
                            int64_t pad) {
  const char* op = "conv2d backward";
  check_devices(op, {&dy, &w});
  check_floating(op, dy);
  check_dtype(op, "the filter", w, dy.dtype());
  const auto g = geometry(x_shape, w.shape(), stride, pad);
  check_shape(op, "dy", dy, out_shape(g));
  if (dy.device().is_cpu() && is_half(dy.dtype()))
    return cast(conv2d_backward_data(to_f32(dy), to_f32(w), x_shape, stride, pad), dy.dtype());
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
                                                 bool want_bias) {
  const char* op = "conv2d backward";
  check_devices(op, {&x, &dy});
  check_floating(op, x);
  check_dtype(op, "dy", dy, x.dtype());
  const auto g = geometry(x.shape(), w_shape, stride, pad);
  check_shape(op, "dy", dy, out_shape(g));
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [dw, db] = conv2d_backward_filter(to_f32(x), to_f32(dy), w_shape, stride, pad, want_bias);
    return {cast(dw, x.dtype()), want_bias ? cast(db, x.dtype()) : Tensor()};
  }
  Tensor dw = Tensor::empty(w_shape, x.dtype(), x.device());
  Tensor db = want_bias ? Tensor::empty({g.c_out}, x.dtype(), x.device()) : Tensor();
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, conv2d_backward_filter(x, dy, dw, want_bias ? &db : nullptr, g));
    return {dw, db};
  }
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

namespace {
// Channel parameters and statistics: float32 for half/bf16 x (cuDNN wants them so, and mixed
// precision keeps BN statistics in fp32), x's dtype for float32/float64 x.
DType bn_param_dtype(DType x) { return is_half(x) ? DType::kFloat32 : x; }

void check_bn(const char* op, const Tensor& x, std::initializer_list<const Tensor*> params) {
  check_floating(op, x);
  if (x.ndim() < 2)
    throw std::invalid_argument(std::string(op) + ": input " + x.str() +
                                " needs a batch and a channel dimension");
  const int64_t c = x.size(-1);
  for (const Tensor* p : params) {
    if (!p->defined()) continue;
    if (p->ndim() != 1 || p->size(0) != c || p->dtype() != bn_param_dtype(x.dtype()))
      throw std::invalid_argument(
          std::string(op) + ": input " + x.str() + " with channel parameter " + p->str() +
          " (expected [" + std::to_string(c) + "] " + dtype_name(bn_param_dtype(x.dtype())) + ")");
  }
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> batchnorm_train(const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, Tensor& running_mean,
                                                   Tensor& running_var, double momentum,
                                                   double eps) {
  const char* op = "batchnorm";
  check_devices(op, {&x, &gamma, &beta, &running_mean, &running_var});
  check_bn(op, x, {&gamma, &beta, &running_mean, &running_var});
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [y, mean, inv_std] =
        batchnorm_train(to_f32(x), gamma, beta, running_mean, running_var, momentum, eps);
    return {cast(y, x.dtype()), mean, inv_std};
  }
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const DType pdt = bn_param_dtype(x.dtype());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({c}, pdt, x.device());
  Tensor inv_std = Tensor::empty({c}, pdt, x.device());
  if (x.device().is_cuda()) {
    // cuDNN's unbiased running variance divides by rows - 1 (PyTorch refuses such a batch too).
    if (rows < 2)
      throw std::invalid_argument("batchnorm: training on " + x.str() +
                                  " needs more than one value per channel");
    MLAI_CUDNN_CALL(op, batchnorm_forward_train(x, gamma, beta, y, running_mean, running_var, mean,
                                                inv_std, momentum, eps));
    return {y, mean, inv_std};
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::batchnorm_forward_train<scalar_t>(
          x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(), y.data<scalar_t>(),
          running_mean.defined() ? running_mean.data<scalar_t>() : nullptr,
          running_var.defined() ? running_var.data<scalar_t>() : nullptr, mean.data<scalar_t>(),
          inv_std.data<scalar_t>(), rows, c, momentum, eps));
  return {y, mean, inv_std};
}

Tensor batchnorm_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                      const Tensor& running_mean, const Tensor& running_var, double eps) {
  const char* op = "batchnorm";
  check_devices(op, {&x, &gamma, &beta, &running_mean, &running_var});
  check_bn(op, x, {&gamma, &beta, &running_mean, &running_var});
  if (!running_mean.defined() || !running_var.defined())
    throw std::invalid_argument("batchnorm: evaluation needs the running statistics");
  if (x.device().is_cpu() && is_half(x.dtype()))
    return cast(batchnorm_eval(to_f32(x), gamma, beta, running_mean, running_var, eps), x.dtype());
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op, batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, y, eps));
    return y;
  }
  MLAI_DISPATCH_F32_F64(x.dtype(), op,
                        k::cpu::batchnorm_forward_eval<scalar_t>(
                            x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(),
                            running_mean.data<scalar_t>(), running_var.data<scalar_t>(),
                            y.data<scalar_t>(), rows, c, eps));
  return y;
}

std::tuple<Tensor, Tensor, Tensor> batchnorm_backward(const Tensor& x, const Tensor& dy,
                                                      const Tensor& gamma, const Tensor& save_mean,
                                                      const Tensor& save_inv_std) {
  const char* op = "batchnorm backward";
  check_devices(op, {&x, &dy, &gamma, &save_mean, &save_inv_std});
  check_bn(op, x, {&gamma, &save_mean, &save_inv_std});
  check_dtype(op, "dy", dy, x.dtype());
  check_shape(op, "dy", dy, x.shape());
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [dx, dgamma, dbeta] =
        batchnorm_backward(to_f32(x), to_f32(dy), gamma, save_mean, save_inv_std);
    return {cast(dx, x.dtype()), dgamma, dbeta};
  }
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const DType pdt = bn_param_dtype(x.dtype());
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor dgamma = Tensor::empty({c}, pdt, x.device());
  Tensor dbeta = Tensor::empty({c}, pdt, x.device());
  if (x.device().is_cuda()) {
    MLAI_CUDNN_CALL(op,
                    batchnorm_backward(x, dy, gamma, save_mean, save_inv_std, dx, dgamma, dbeta));
    return {dx, dgamma, dbeta};
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::batchnorm_backward<scalar_t>(
          x.data<scalar_t>(), dy.data<scalar_t>(), gamma.data<scalar_t>(),
          save_mean.data<scalar_t>(), save_inv_std.data<scalar_t>(), dx.data<scalar_t>(),
          dgamma.data<scalar_t>(), dbeta.data<scalar_t>(), rows, c));
  return {dx, dgamma, dbeta};
}

}  // namespace mlai::tensor
