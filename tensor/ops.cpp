// Tensor ops: validate, allocate, dispatch on dtype and device to kernels/ (current stream).
#include "tensor/ops.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/amp.h"
#include "kernels/broadcast.h"
#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/fill.h"
#include "kernels/gemm.h"
#include "kernels/reduce.h"
#include "kernels/softmax_xent.h"
#include "tensor/dispatch.h"
#include "tensor/handles.h"

namespace mlai::tensor {


namespace {
void check_same(const char* op, const Tensor& a, const Tensor& b, bool same_shape = true) {
  if (!a.defined() || !b.defined()) throw std::invalid_argument(std::string(op) + ": undefined tensor");
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": tensors on different devices (" +
                                a.device().str() + " and " + b.device().str() + ")");
  if (a.dtype() != b.dtype())
    throw std::invalid_argument(std::string(op) + ": dtype mismatch (" + dtype_name(a.dtype()) +
                                " and " + dtype_name(b.dtype()) + ")");
  if (same_shape && a.shape() != b.shape())
    throw std::invalid_argument(std::string(op) + ": shape mismatch " + shape_str(a.shape()) +
                                " vs " + shape_str(b.shape()));
}
Tensor like(const Tensor& x) { return Tensor::empty(x.shape(), x.dtype(), x.device()); }
int norm_dim(const Tensor& x, int dim) {
  const int d = dim < 0 ? dim + x.ndim() : dim;
  if (d < 0 || d >= x.ndim())
    throw std::out_of_range("dim " + std::to_string(dim) + " out of range for " + x.str());
  return d;
}
// [outer, dim, inner] view of a reduction over `d`.
void split_dims(const Tensor& x, int d, int64_t& outer, int64_t& dim, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int i = 0; i < d; ++i) outer *= x.shape()[static_cast<size_t>(i)];
  dim = x.shape()[static_cast<size_t>(d)];
  for (int i = d + 1; i < x.ndim(); ++i) inner *= x.shape()[static_cast<size_t>(i)];
}
Shape reduced_shape(const Tensor& x, int d, bool keepdim) {
  Shape s = x.shape();
  if (keepdim) {
    s[static_cast<size_t>(d)] = 1;
  } else {
    s.erase(s.begin() + d);
  }
  return s;
}
}  // namespace

#define MLAI_BINARY_OP(NAME)                                                              \
  Tensor NAME(const Tensor& a, const Tensor& b) {                                         \
    check_same(#NAME, a, b);                                                              \
    Tensor out = like(a);                                                                 \
    MLAI_DISPATCH_FLOAT(a.dtype(), #NAME,                                                 \
                        MLAI_CALL(a.device(), NAME<scalar_t>, a.data<scalar_t>(),         \
                                  b.data<scalar_t>(), out.data<scalar_t>(), a.numel())); \
    return out;                                                                           \
  }
MLAI_BINARY_OP(add)
MLAI_BINARY_OP(sub)
MLAI_BINARY_OP(mul)
MLAI_BINARY_OP(div)
#undef MLAI_BINARY_OP

Tensor scale(const Tensor& x, double alpha) {
  Tensor out = like(x);
  MLAI_DISPATCH_FLOAT(x.dtype(), "scale",
                      MLAI_CALL(x.device(), scale<scalar_t>, x.data<scalar_t>(), alpha,
                                out.data<scalar_t>(), x.numel()));
  return out;
}

void axpy_(double alpha, const Tensor& x, Tensor& y) {
  check_same("axpy_", x, y);
  MLAI_DISPATCH_FLOAT(x.dtype(), "axpy_",
                      MLAI_CALL(x.device(), axpy<scalar_t>, alpha, x.data<scalar_t>(),
                                y.data<scalar_t>(), x.numel()));
}

Tensor relu(const Tensor& x) {
  Tensor out = like(x);
  MLAI_DISPATCH_FLOAT(x.dtype(), "relu",
                      MLAI_CALL(x.device(), relu<scalar_t>, x.data<scalar_t>(),
                                out.data<scalar_t>(), x.numel()));
  return out;
}

Tensor relu_backward(const Tensor& dy, const Tensor& x) {
  check_same("relu_backward", dy, x);
  Tensor dx = like(x);
  MLAI_DISPATCH_FLOAT(x.dtype(), "relu_backward",
                      MLAI_CALL(x.device(), relu_backward<scalar_t>, dy.data<scalar_t>(),
                                x.data<scalar_t>(), dx.data<scalar_t>(), x.numel()));
  return dx;
}

Tensor relu6(const Tensor& x) {
  Tensor out = like(x);
  MLAI_DISPATCH_FLOAT(
      x.dtype(), "relu6",
      MLAI_CALL(x.device(), relu6<scalar_t>, x.data<scalar_t>(), out.data<scalar_t>(), x.numel()));
  return out;
}

Tensor relu6_backward(const Tensor& dy, const Tensor& x) {
  check_same("relu6_backward", dy, x);
  Tensor dx = like(x);
  MLAI_DISPATCH_FLOAT(x.dtype(), "relu6_backward",
                      MLAI_CALL(x.device(), relu6_backward<scalar_t>, dy.data<scalar_t>(),
                                x.data<scalar_t>(), dx.data<scalar_t>(), x.numel()));
  return dx;
}

Tensor bias_act(const Tensor& x, const Tensor& bias, bool apply_relu) {
  check_same("bias_act", x, bias, false);
  if (x.ndim() != 2 || bias.ndim() != 1 || bias.size(0) != x.size(1))
    throw std::invalid_argument("bias_act: expected x [rows, cols] and bias [cols], got " +
                                shape_str(x.shape()) + " and " + shape_str(bias.shape()));
  Tensor y = like(x);
  MLAI_DISPATCH_FLOAT(x.dtype(), "bias_act",
                      MLAI_CALL(x.device(), bias_act<scalar_t>, x.data<scalar_t>(),
                                bias.data<scalar_t>(), y.data<scalar_t>(), x.size(0), x.size(1),
                                apply_relu));
  return y;
}

Tensor sum(const Tensor& x, double scale) {
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "sum",
                      MLAI_CALL(x.device(), sum_all<scalar_t>, x.data<scalar_t>(), x.numel(),
                                scale, out.data<scalar_t>()));
  return out;
}

Tensor mean(const Tensor& x) {
  if (x.numel() == 0) throw std::invalid_argument("mean of an empty tensor");
  return sum(x, 1.0 / static_cast<double>(x.numel()));
}

Tensor sum_dim(const Tensor& x, int dim, bool keepdim, double scale) {
  const int d = norm_dim(x, dim);
  int64_t outer, n, inner;
  split_dims(x, d, outer, n, inner);
  Tensor out = Tensor::empty(reduced_shape(x, d, keepdim), x.dtype(), x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "sum_dim",
                      MLAI_CALL(x.device(), sum_dim<scalar_t>, x.data<scalar_t>(),
                                out.data<scalar_t>(), outer, n, inner, scale));
  return out;
}

Tensor mean_dim(const Tensor& x, int dim, bool keepdim) {
  const int64_t n = x.size(dim);
  if (n == 0) throw std::invalid_argument("mean over an empty dimension");
  return sum_dim(x, dim, keepdim, 1.0 / static_cast<double>(n));
}

std::pair<Tensor, Tensor> max_dim(const Tensor& x, int dim) {
  const int d = norm_dim(x, dim);
  int64_t outer, n, inner;
  split_dims(x, d, outer, n, inner);
  if (n == 0) throw std::invalid_argument("max over an empty dimension");
  Tensor values = Tensor::empty(reduced_shape(x, d, false), x.dtype(), x.device());
  Tensor idx = Tensor::empty(reduced_shape(x, d, false), DType::kInt64, x.device());
  MLAI_DISPATCH_FLOAT(x.dtype(), "max_dim",
                      MLAI_CALL(x.device(), max_dim<scalar_t>, x.data<scalar_t>(),
                                values.data<scalar_t>(), idx.data<int64_t>(), outer, n, inner));
  return {values, idx};
}

Tensor broadcast_dim(const Tensor& g, const Shape& shape, int dim, double scale) {
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  int64_t outer = 1, n = out.numel(), inner = 1;
  if (g.numel() != 1 || dim >= 0) {
    split_dims(out, norm_dim(out, dim), outer, n, inner);
    if (g.numel() != outer * inner)
      throw std::invalid_argument("broadcast_dim: " + g.str() + " does not broadcast to " +
                                  shape_str(shape) + " along dim " + std::to_string(dim));
  }
  MLAI_DISPATCH_FLOAT(g.dtype(), "broadcast_dim",
                      MLAI_CALL(g.device(), broadcast_dim<scalar_t>, g.data<scalar_t>(),
                                out.data<scalar_t>(), outer, n, inner, scale));
  return out;
}

namespace {
DType loss_dtype(DType logits) { return logits == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32; }
void check_xent(const Tensor& logits, const Tensor& labels) {
  if (logits.ndim() != 2 || labels.ndim() != 1 || labels.size(0) != logits.size(0))
    throw std::invalid_argument("cross entropy: expected logits [rows, classes] and labels [rows], "
                                "got " + shape_str(logits.shape()) + " and " +
                                shape_str(labels.shape()));
  if (labels.dtype() != DType::kInt64 || labels.device() != logits.device())
    throw std::invalid_argument("cross entropy: labels must be int64 on " + logits.device().str());
}
}  // namespace

namespace {
// The class weights as the kernel reads them: [classes] in the loss dtype on the logits' device.
Tensor xent_weights(const Tensor& weights, const Tensor& logits) {
  if (!weights.defined()) return weights;
  if (weights.ndim() != 1 || weights.size(0) != logits.size(1) ||
      weights.device() != logits.device() || !is_floating(weights.dtype()))
    throw std::invalid_argument("cross entropy: class weights " + weights.str() + " must be [" +
                                std::to_string(logits.size(1)) + "] floats on " +
                                logits.device().str());
  return weights.to(loss_dtype(logits.dtype()));
}
}  // namespace

std::pair<Tensor, Tensor> softmax_xent_forward(const Tensor& logits, const Tensor& labels,
                                               double label_smoothing, const Tensor& weights,
                                               Tensor* weight_rows) {
  check_xent(logits, labels);
  const int64_t rows = logits.size(0), classes = logits.size(1);
  const Tensor w = xent_weights(weights, logits);
  if (w.defined() && weight_rows == nullptr)
    throw std::invalid_argument("softmax_xent_forward: class weights need weight_rows");
  Tensor loss = Tensor::empty({rows}, loss_dtype(logits.dtype()), logits.device());
  Tensor lse = Tensor::empty({rows}, loss_dtype(logits.dtype()), logits.device());
  Tensor wrows;
  if (w.defined()) wrows = Tensor::empty({rows}, loss_dtype(logits.dtype()), logits.device());
  MLAI_DISPATCH_FLOAT(
      logits.dtype(), "softmax_xent_forward",
      using A = k::acc_t<scalar_t>;
      MLAI_CALL(logits.device(), softmax_xent_forward<scalar_t>, logits.data<scalar_t>(),
                labels.data<int64_t>(), rows, classes, label_smoothing,
                w.defined() ? w.data<A>() : nullptr, loss.data<A>(), lse.data<A>(),
                w.defined() ? wrows.data<A>() : nullptr));
  if (weight_rows) *weight_rows = wrows;
  return {loss, lse};
}

Tensor softmax_xent_backward(const Tensor& logits, const Tensor& labels, const Tensor& lse,
                             const Tensor& dloss, double scale, double label_smoothing,
                             const Tensor& weights, double weight_sum) {
  check_xent(logits, labels);
  const int64_t rows = logits.size(0), classes = logits.size(1);
  // The kernel reads dloss and lse on the logits' device (a host dloss would be a bad address
  // inside a CUDA kernel).
  if (dloss.device() != logits.device() || lse.device() != logits.device() ||
      dloss.numel() != 1 || lse.numel() != rows)
    throw std::invalid_argument("softmax_xent_backward: dloss " + dloss.str() + " and lse " +
                                lse.str() + " must be a scalar and [" + std::to_string(rows) +
                                "] on " + logits.device().str());
  const Tensor w = xent_weights(weights, logits);
  Tensor dlogits = like(logits);
  MLAI_DISPATCH_FLOAT(
      logits.dtype(), "softmax_xent_backward",
      using A = k::acc_t<scalar_t>;
      MLAI_CALL(logits.device(), softmax_xent_backward<scalar_t>, logits.data<scalar_t>(),
                labels.data<int64_t>(), lse.data<A>(), dloss.data<A>(), scale, rows, classes,
                label_smoothing, w.defined() ? w.data<A>() : nullptr, weight_sum,
                dlogits.data<scalar_t>()));
  return dlogits;
}

void gemm_(const Tensor& a, const Tensor& b, Tensor& c, bool ta, bool tb, double alpha,
           double beta) {
  check_same("matmul", a, b, false);
  check_same("matmul", a, c, false);
  if (a.ndim() != 2 || b.ndim() != 2 || c.ndim() != 2)
    throw std::invalid_argument("matmul: expected 2-D tensors, got " + shape_str(a.shape()) +
                                " and " + shape_str(b.shape()));
  const int64_t m = ta ? a.size(1) : a.size(0), ka = ta ? a.size(0) : a.size(1);
  const int64_t kb = tb ? b.size(1) : b.size(0), n = tb ? b.size(0) : b.size(1);
  if (ka != kb || c.size(0) != m || c.size(1) != n)
    throw std::invalid_argument("matmul: shapes " + shape_str(a.shape()) + (ta ? "^T" : "") +
                                " @ " + shape_str(b.shape()) + (tb ? "^T" : "") + " into " +
                                shape_str(c.shape()) + " do not agree");
  MLAI_DISPATCH_FLOAT(a.dtype(), "matmul", {
    if (a.device().is_cuda()) {
#ifdef MLAI_WITH_CUDA
      k::cuda::gemm<scalar_t>(ta, tb, m, n, ka, alpha, a.data<scalar_t>(), a.size(1),
                              b.data<scalar_t>(), b.size(1), beta, c.data<scalar_t>(), n,
                              cublas_handle(a.device().index),
                              cublas_workspace(a.device().index),
                              current_stream(a.device()).handle());
#endif
    } else {
      k::cpu::gemm<scalar_t>(ta, tb, m, n, ka, alpha, a.data<scalar_t>(), a.size(1),
                             b.data<scalar_t>(), b.size(1), beta, c.data<scalar_t>(), n);
    }
  });
}

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  if (a.ndim() != 2 || b.ndim() != 2)
    throw std::invalid_argument("matmul: expected 2-D tensors, got " + shape_str(a.shape()) +
                                " and " + shape_str(b.shape()));
  Tensor c = Tensor::empty({ta ? a.size(1) : a.size(0), tb ? b.size(0) : b.size(1)}, a.dtype(),
                           a.device());
  gemm_(a, b, c, ta, tb, 1.0, 0.0);
  return c;
}

Tensor cast(const Tensor& x, DType dt) {
  Tensor out = Tensor::empty(x.shape(), dt, x.device());
  MLAI_DISPATCH_ALL(x.dtype(), "cast", {
    using Src = scalar_t;
    MLAI_DISPATCH_ALL(dt, "cast", {
      if (x.device().is_cuda()) {
#ifdef MLAI_WITH_CUDA
        k::cuda::cast<Src, scalar_t>(x.data<Src>(), out.data<scalar_t>(), x.numel(),
                                     current_stream(x.device()).handle());
#endif
      } else {
        k::cpu::cast<Src, scalar_t>(x.data<Src>(), out.data<scalar_t>(), x.numel());
      }
    });
  });
  return out;
}

void scale_cast_(const Tensor& x, Tensor& out, double alpha) {
  if (x.numel() != out.numel() || x.device() != out.device())
    throw std::invalid_argument("scale_cast_: " + x.str() + " into " + out.str() +
                                " (the same size and device expected)");
  const bool narrow = x.dtype() == DType::kFloat32 && out.dtype() != DType::kFloat32;
  const bool widen = out.dtype() == DType::kFloat32 && x.dtype() != DType::kFloat32;
  if (!narrow && !widen)
    throw std::invalid_argument("scale_cast_: " + x.str() + " into " + out.str() +
                                " (float32 to float16/bfloat16 or back expected)");
  const auto a = static_cast<float>(alpha);
  const int64_t n = x.numel();
  if (narrow) {
    MLAI_DISPATCH_TRAINING(out.dtype(), "scale_cast_", {
      if constexpr (!std::is_same_v<scalar_t, float>)
        MLAI_CALL(x.device(), scale_cast, x.data<float>(), out.data<scalar_t>(), n, a);
    });
  } else {
    MLAI_DISPATCH_TRAINING(x.dtype(), "scale_cast_", {
      if constexpr (!std::is_same_v<scalar_t, float>)
        MLAI_CALL(x.device(), scale_cast, x.data<scalar_t>(), out.data<float>(), n, a);
    });
  }
}

void fill_(Tensor& t, double value) {
  MLAI_DISPATCH_ALL(t.dtype(), "fill_",
                    MLAI_CALL(t.device(), fill<scalar_t>, t.data<scalar_t>(), t.numel(), value));
}

void uniform_(Tensor& t, double lo, double hi, Generator& gen) {
  const uint64_t off = gen.advance(static_cast<uint64_t>(t.numel()));
  MLAI_DISPATCH_FLOAT(t.dtype(), "uniform_",
                      MLAI_CALL(t.device(), uniform<scalar_t>, t.data<scalar_t>(), t.numel(),
                                gen.seed(), off, lo, hi));
}

void normal_(Tensor& t, double mean, double stddev, Generator& gen) {
  const uint64_t off = gen.advance(static_cast<uint64_t>(t.numel()));
  MLAI_DISPATCH_FLOAT(t.dtype(), "normal_",
                      MLAI_CALL(t.device(), normal<scalar_t>, t.data<scalar_t>(), t.numel(),
                                gen.seed(), off, mean, stddev));
}

void unscale_check_finite_(std::vector<Tensor>& tensors, const Tensor& inv_scale,
                           Tensor& found_inf) {
  if (tensors.empty()) return;
  const Device dev = tensors[0].device();
  if ((inv_scale.defined() && (inv_scale.dtype() != DType::kFloat32 || inv_scale.device() != dev)) ||
      found_inf.dtype() != DType::kFloat32 || found_inf.device() != dev)
    throw std::invalid_argument("unscale_check_finite_: inv_scale and found_inf must be float32 "
                                "scalars on " + dev.str());
  const float* inv = inv_scale.defined() ? inv_scale.data<float>() : nullptr;
  // One pass per dtype present (fp16 working-weight gradients and fp32 batch-norm ones), each
  // in groups of kMaxTensorsPerLaunch: a few launches for a whole model.
  std::vector<DType> dtypes;
  for (const Tensor& t : tensors) {
    if (t.device() != dev)
      throw std::invalid_argument("unscale_check_finite_: " + t.str() + " is not on " + dev.str());
    if (std::find(dtypes.begin(), dtypes.end(), t.dtype()) == dtypes.end()) dtypes.push_back(t.dtype());
  }
  for (const DType dt : dtypes) {
    std::vector<void*> ptrs;
    std::vector<int64_t> sizes;
    for (const Tensor& t : tensors) {
      if (t.dtype() != dt) continue;
      ptrs.push_back(t.data_ptr());
      sizes.push_back(t.numel());
    }
    for (size_t start = 0; start < ptrs.size(); start += k::kMaxTensorsPerLaunch) {
      const int count = static_cast<int>(std::min(ptrs.size() - start, size_t{k::kMaxTensorsPerLaunch}));
      MLAI_DISPATCH_TRAINING(dt, "unscale_check_finite_",
                             MLAI_CALL(dev, unscale_check_finite<scalar_t>,
                                       reinterpret_cast<scalar_t* const*>(ptrs.data() + start),
                                       sizes.data() + start, count, inv, found_inf.data<float>()));
    }
  }
}

void update_loss_scale_(Tensor& scale, Tensor& growth_tracker, Tensor& skipped,
                        Tensor& found_inf, double growth, double backoff, int64_t interval) {
  const Device dev = scale.device();
  if (scale.dtype() != DType::kFloat32 || scale.numel() != 2 ||
      growth_tracker.dtype() != DType::kInt32 || growth_tracker.numel() != 1 ||
      skipped.dtype() != DType::kInt64 || skipped.numel() != 1 ||
      found_inf.dtype() != DType::kFloat32 || found_inf.numel() != 1 ||
      growth_tracker.device() != dev || skipped.device() != dev || found_inf.device() != dev)
    throw std::invalid_argument("update_loss_scale_: expected float32[2], int32[1], int64[1], "
                                "float32[1] on one device, got " + scale.str() + ", " +
                                growth_tracker.str() + ", " + skipped.str() + ", " + found_inf.str());
  if (interval < 1 || interval > INT32_MAX)
    throw std::invalid_argument("update_loss_scale_: growth interval must be >= 1");
  MLAI_CALL(dev, update_loss_scale, scale.data<float>(), growth_tracker.data<int32_t>(),
            skipped.data<int64_t>(), found_inf.data<float>(), static_cast<float>(growth),
            static_cast<float>(backoff), static_cast<int32_t>(interval));
}

Tensor squared_norm(const std::vector<Tensor>& grads) {
  if (grads.empty()) throw std::invalid_argument("squared_norm: no tensors");
  const Device dev = grads[0].device();
  Tensor total = Tensor::zeros({}, DType::kFloat32, dev);
  // One multi-tensor pass per dtype present, in groups of kMaxTensorsPerLaunch (float64
  // gradients, from float64 models, go through float32 as the kernels take training dtypes).
  std::vector<Tensor> list;
  std::vector<DType> dtypes;
  for (const Tensor& g : grads) {
    if (g.device() != dev)
      throw std::invalid_argument("squared_norm: " + g.str() + " is not on " + dev.str());
    list.push_back(g.dtype() == DType::kFloat64 ? g.to(DType::kFloat32) : g);
    if (std::find(dtypes.begin(), dtypes.end(), list.back().dtype()) == dtypes.end())
      dtypes.push_back(list.back().dtype());
  }
  Tensor partials;
#ifdef MLAI_WITH_CUDA
  if (dev.is_cuda()) partials = Tensor::empty({k::cuda::sum_squares_partials()}, DType::kFloat64, dev);
#endif
  for (const DType dt : dtypes) {
    std::vector<const void*> ptrs;
    std::vector<int64_t> sizes;
    for (const Tensor& t : list) {
      if (t.dtype() != dt) continue;
      ptrs.push_back(t.data_ptr());
      sizes.push_back(t.numel());
    }
    MLAI_DISPATCH_TRAINING(dt, "squared_norm", {
      const auto* p = reinterpret_cast<const scalar_t* const*>(ptrs.data());
      const int count = static_cast<int>(ptrs.size());
      if (dev.is_cuda()) {
#ifdef MLAI_WITH_CUDA
        k::cuda::sum_squares<scalar_t>(p, sizes.data(), count, total.data<float>(),
                                       partials.data<double>(), current_stream(dev).handle());
#endif
      } else {
        k::cpu::sum_squares<scalar_t>(p, sizes.data(), count, total.data<float>());
      }
    });
  }
  return total;
}

Tensor clip_norm_factor(const Tensor& sum_sq, const Tensor& inv_scale, double grad_scale,
                        double max_norm) {
  const Device dev = sum_sq.device();
  if (sum_sq.dtype() != DType::kFloat32 || sum_sq.numel() != 1 ||
      (inv_scale.defined() && (inv_scale.dtype() != DType::kFloat32 || inv_scale.device() != dev)))
    throw std::invalid_argument("clip_norm_factor: float32 values on one device expected, got " +
                                sum_sq.str() + (inv_scale.defined() ? " and " + inv_scale.str() : ""));
  if (!(max_norm > 0)) throw std::invalid_argument("clip_norm_factor: max_norm must be > 0");
  Tensor out = Tensor::empty({1}, DType::kFloat32, dev);
  MLAI_CALL(dev, clip_norm_factor, sum_sq.data<float>(),
            inv_scale.defined() ? inv_scale.data<float>() : nullptr, static_cast<float>(grad_scale),
            static_cast<float>(max_norm), out.data<float>());
  return out;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel())
    throw std::invalid_argument("max_rel_error: " + a.str() + " vs " + b.str());
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) != std::isnan(y[i])) return INFINITY;
    if (std::isnan(x[i])) continue;
    if (std::isinf(x[i]) || std::isinf(y[i])) {
      if (x[i] != y[i]) return INFINITY;
      continue;
    }
    diff = std::max(diff, std::fabs(x[i] - y[i]));
    scale = std::max(scale, std::fabs(y[i]));
  }
  return diff / std::max(scale, 1e-30);
}

}  // namespace mlai::tensor
