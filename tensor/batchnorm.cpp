// Validation and dispatch for batch norm (see nn_ops.h). Plain batch norm on CUDA is cuDNN's;
// the fused one (ResNet's y = relu(bn(x) + z)) runs mlai's kernels (kernels/batchnorm.cu), as
// cuDNN's fused variants cover only some layouts and dtypes. On the CPU both are the same
// kernels; float16/bfloat16 go through float32 and are rounded once.
#include "kernels/batchnorm.h"

#include <stdexcept>
#include <string>

#include "tensor/cudnn_ops.h"
#include "tensor/nn_checks.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {

namespace k = mlai::kernels;
using detail::check_devices;
using detail::check_dtype;
using detail::check_floating;
using detail::check_shape;
using detail::is_half;
using detail::param_dtype;
using detail::to_f32;

namespace {
void check_bn(const char* op, const Tensor& x, std::initializer_list<const Tensor*> params) {
  check_floating(op, x);
  if (x.ndim() < 2)
    throw std::invalid_argument(std::string(op) + ": input " + x.str() +
                                " needs a batch and a channel dimension");
  const int64_t c = x.size(-1);
  for (const Tensor* p : params) {
    if (!p->defined()) continue;
    if (p->ndim() != 1 || p->size(0) != c || p->dtype() != param_dtype(x.dtype()))
      throw std::invalid_argument(
          std::string(op) + ": input " + x.str() + " with channel parameter " + p->str() +
          " (expected [" + std::to_string(c) + "] " + dtype_name(param_dtype(x.dtype())) + ")");
  }
}

// Plain batch norm on CUDA goes to cuDNN where cuDNN is known to take it: 4-D NHWC input with
// N <= 65535 (cuDNN's spatial batch norm refuses larger N in places) and not bfloat16 (which
// PyTorch does not send to cuDNN's batch norm either). Everything else runs mlai's kernels
// (the fused ones without residual or relu), which take any size and dtype; the choice depends
// on x alone, so a forward and its backward always agree.
bool cudnn_takes(const Tensor& x) {
  return x.ndim() == 4 && x.size(0) <= 65535 && x.dtype() != DType::kBFloat16;
}

void check_running(const char* op, const Tensor& running_mean, const Tensor& running_var) {
  if (running_mean.defined() != running_var.defined())
    throw std::invalid_argument(std::string(op) +
                                ": running_mean and running_var must both be tracked or neither");
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> batchnorm_train(const Tensor& x, const Tensor& gamma,
                                                   const Tensor& beta, Tensor& running_mean,
                                                   Tensor& running_var, double momentum,
                                                   double eps) {
  const char* op = "batchnorm";
  check_devices(op, {&x, &gamma, &beta, &running_mean, &running_var});
  check_bn(op, x, {&gamma, &beta, &running_mean, &running_var});
  check_running(op, running_mean, running_var);
  if (x.device().is_cuda() && !cudnn_takes(x))
    return batchnorm_act_train(x, gamma, beta, Tensor(), false, running_mean, running_var, momentum,
                               eps);
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [y, mean, inv_std] =
        batchnorm_train(to_f32(x), gamma, beta, running_mean, running_var, momentum, eps);
    return {cast(y, x.dtype()), mean, inv_std};
  }
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const DType pdt = param_dtype(x.dtype());
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
  if (x.device().is_cuda() && !cudnn_takes(x))
    return batchnorm_act_eval(x, gamma, beta, running_mean, running_var, Tensor(), false, eps);
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
  if (x.device().is_cuda() && !cudnn_takes(x)) {
    BatchNormGrads g =
        batchnorm_act_backward(x, dy, gamma, save_mean, save_inv_std, Tensor(), false);
    return {g.dx, g.dgamma, g.dbeta};
  }
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [dx, dgamma, dbeta] =
        batchnorm_backward(to_f32(x), to_f32(dy), gamma, save_mean, save_inv_std);
    return {cast(dx, x.dtype()), dgamma, dbeta};
  }
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const DType pdt = param_dtype(x.dtype());
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

// ---- fused: y = act(bn(x) + z) -----------------------------------------------------------------

namespace {
void check_fused(const char* op, const Tensor& x, const Tensor& z) {
  if (!z.defined()) return;
  check_dtype(op, "the residual", z, x.dtype());
  check_shape(op, "the residual", z, x.shape());
}

#ifdef MLAI_WITH_CUDA
// Device scratch for the fused kernels' partial sums and per-channel coefficients.
Tensor scratch_for(const Tensor& x) {
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const size_t bytes = k::cuda::batchnorm_scratch_bytes(rows, c);
  return Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::kFloat64, x.device());
}
StreamHandle stream_of(const Tensor& x) { return current_stream(x.device()).handle(); }
#else
[[noreturn]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) + ": mlai was built without CUDA (-DMLAI_CUDA=OFF)");
}
#endif

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <class T>
T* mut_ptr_or_null(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
}  // namespace

std::tuple<Tensor, Tensor, Tensor> batchnorm_act_train(const Tensor& x, const Tensor& gamma,
                                                       const Tensor& beta, const Tensor& z,
                                                       BnAct act, Tensor& running_mean,
                                                       Tensor& running_var, double momentum,
                                                       double eps) {
  const char* op = "batchnorm (fused)";
  check_devices(op, {&x, &gamma, &beta, &z, &running_mean, &running_var});
  check_bn(op, x, {&gamma, &beta, &running_mean, &running_var});
  check_running(op, running_mean, running_var);
  check_fused(op, x, z);
  const int64_t c = x.size(-1), rows = x.numel() / c;
  if (rows < 1) throw std::invalid_argument(std::string(op) + ": empty batch " + x.str());
  if (x.device().is_cpu() && is_half(x.dtype())) {
    auto [y, mean, inv_std] = batchnorm_act_train(to_f32(x), gamma, beta, to_f32(z), act,
                                                  running_mean, running_var, momentum, eps);
    return {cast(y, x.dtype()), mean, inv_std};
  }
  const DType pdt = param_dtype(x.dtype());
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({c}, pdt, x.device());
  Tensor inv_std = Tensor::empty({c}, pdt, x.device());
  if (x.device().is_cuda()) {
#ifdef MLAI_WITH_CUDA
    Tensor scratch = scratch_for(x);
    MLAI_DISPATCH_FLOAT(x.dtype(), op, {
      using A = k::acc_t<scalar_t>;
      k::cuda::batchnorm_forward_train<scalar_t>(
          x.data<scalar_t>(), gamma.data<A>(), beta.data<A>(), y.data<scalar_t>(),
          mut_ptr_or_null<A>(running_mean), mut_ptr_or_null<A>(running_var), mean.data<A>(),
          inv_std.data<A>(), rows, c, momentum, eps, ptr_or_null<scalar_t>(z), act,
          scratch.data_ptr(), stream_of(x));
    });
    return {y, mean, inv_std};
#else
    no_cuda(op);
#endif
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::batchnorm_forward_train<scalar_t>(
          x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(), y.data<scalar_t>(),
          mut_ptr_or_null<scalar_t>(running_mean), mut_ptr_or_null<scalar_t>(running_var),
          mean.data<scalar_t>(), inv_std.data<scalar_t>(), rows, c, momentum, eps,
          ptr_or_null<scalar_t>(z), act));
  return {y, mean, inv_std};
}

Tensor batchnorm_act_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& running_mean, const Tensor& running_var, const Tensor& z,
                          BnAct act, double eps) {
  const char* op = "batchnorm (fused)";
  check_devices(op, {&x, &gamma, &beta, &z, &running_mean, &running_var});
  check_bn(op, x, {&gamma, &beta, &running_mean, &running_var});
  check_fused(op, x, z);
  if (!running_mean.defined() || !running_var.defined())
    throw std::invalid_argument(std::string(op) + ": evaluation needs the running statistics");
  if (x.device().is_cpu() && is_half(x.dtype()))
    return cast(
        batchnorm_act_eval(to_f32(x), gamma, beta, running_mean, running_var, to_f32(z), act, eps),
        x.dtype());
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.device().is_cuda()) {
#ifdef MLAI_WITH_CUDA
    Tensor scratch = scratch_for(x);
    MLAI_DISPATCH_FLOAT(x.dtype(), op, {
      using A = k::acc_t<scalar_t>;
      k::cuda::batchnorm_forward_eval<scalar_t>(
          x.data<scalar_t>(), gamma.data<A>(), beta.data<A>(), running_mean.data<A>(),
          running_var.data<A>(), y.data<scalar_t>(), rows, c, eps, ptr_or_null<scalar_t>(z), act,
          scratch.data_ptr(), stream_of(x));
    });
    return y;
#else
    no_cuda(op);
#endif
  }
  MLAI_DISPATCH_F32_F64(x.dtype(), op,
                        k::cpu::batchnorm_forward_eval<scalar_t>(
                            x.data<scalar_t>(), gamma.data<scalar_t>(), beta.data<scalar_t>(),
                            running_mean.data<scalar_t>(), running_var.data<scalar_t>(),
                            y.data<scalar_t>(), rows, c, eps, ptr_or_null<scalar_t>(z), act));
  return y;
}

BatchNormGrads batchnorm_act_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                                      const Tensor& save_mean, const Tensor& save_inv_std,
                                      const Tensor& y, bool want_dz, BnAct act) {
  const char* op = "batchnorm (fused) backward";
  check_devices(op, {&x, &dy, &gamma, &save_mean, &save_inv_std, &y});
  check_bn(op, x, {&gamma, &save_mean, &save_inv_std});
  check_dtype(op, "dy", dy, x.dtype());
  check_shape(op, "dy", dy, x.shape());
  check_fused(op, x, y);
  if (x.device().is_cpu() && is_half(x.dtype())) {
    BatchNormGrads g = batchnorm_act_backward(to_f32(x), to_f32(dy), gamma, save_mean, save_inv_std,
                                              to_f32(y), want_dz, act);
    g.dx = cast(g.dx, x.dtype());
    if (g.dz.defined()) g.dz = cast(g.dz, x.dtype());
    return g;
  }
  const int64_t c = x.size(-1), rows = x.numel() / c;
  const DType pdt = param_dtype(x.dtype());
  BatchNormGrads g;
  g.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  g.dgamma = Tensor::empty({c}, pdt, x.device());
  g.dbeta = Tensor::empty({c}, pdt, x.device());
  // Without an activation dz is dy itself (as an add's backward passes it on): no copy.
  if (want_dz) g.dz = y.defined() ? Tensor::empty(x.shape(), x.dtype(), x.device()) : dy;
  Tensor dz_out = y.defined() ? g.dz : Tensor();  // what the kernels write
  if (x.device().is_cuda()) {
#ifdef MLAI_WITH_CUDA
    Tensor scratch = scratch_for(x);
    MLAI_DISPATCH_FLOAT(x.dtype(), op, {
      using A = k::acc_t<scalar_t>;
      k::cuda::batchnorm_backward<scalar_t>(
          x.data<scalar_t>(), dy.data<scalar_t>(), gamma.data<A>(), save_mean.data<A>(),
          save_inv_std.data<A>(), g.dx.data<scalar_t>(), g.dgamma.data<A>(), g.dbeta.data<A>(),
          rows, c, ptr_or_null<scalar_t>(y), mut_ptr_or_null<scalar_t>(dz_out), act.cap(),
          scratch.data_ptr(), stream_of(x));
    });
    return g;
#else
    no_cuda(op);
#endif
  }
  MLAI_DISPATCH_F32_F64(
      x.dtype(), op,
      k::cpu::batchnorm_backward<scalar_t>(
          x.data<scalar_t>(), dy.data<scalar_t>(), gamma.data<scalar_t>(),
          save_mean.data<scalar_t>(), save_inv_std.data<scalar_t>(), g.dx.data<scalar_t>(),
          g.dgamma.data<scalar_t>(), g.dbeta.data<scalar_t>(), rows, c, ptr_or_null<scalar_t>(y),
          mut_ptr_or_null<scalar_t>(dz_out), act.cap()));
  return g;
}

}  // namespace mlai::tensor
