// Dropout and multi-tensor optimizer steps: validation and dispatch.
#include "tensor/fused_ops.h"

#include <stdexcept>

#include "kernels/dropout.h"
#include "kernels/metrics.h"
#include "tensor/dispatch.h"

namespace mlai::tensor {

std::pair<Tensor, Tensor> dropout(const Tensor& x, double p, Generator& gen) {
  if (p < 0 || p >= 1) throw std::invalid_argument("dropout probability must be in [0, 1)");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mask = Tensor::empty(x.shape(), DType::kUInt8, x.device());
  const uint64_t off = gen.advance(static_cast<uint64_t>(x.numel()));
  MLAI_DISPATCH_FLOAT(x.dtype(), "dropout",
                      MLAI_CALL(x.device(), dropout_forward<scalar_t>, x.data<scalar_t>(),
                                y.data<scalar_t>(), mask.data<uint8_t>(), x.numel(), p,
                                gen.seed(), off));
  return {y, mask};
}

Tensor dropout_backward(const Tensor& dy, const Tensor& mask, double scale) {
  Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
  MLAI_DISPATCH_FLOAT(dy.dtype(), "dropout_backward",
                      MLAI_CALL(dy.device(), dropout_backward<scalar_t>, dy.data<scalar_t>(),
                                mask.data<uint8_t>(), dx.data<scalar_t>(), dy.numel(), scale));
  return dx;
}

Tensor augment_normalize(const Tensor& pixels, const Tensor& ids, const kernels::AugmentParams& p,
                         DType dt) {
  if (pixels.dtype() != DType::kUInt8 || pixels.ndim() != 4 || ids.dtype() != DType::kInt64 ||
      ids.numel() != pixels.size(0) || pixels.device() != ids.device() ||
      p.channels > kernels::kMaxAugmentChannels || p.batch != pixels.size(0) ||
      p.height != pixels.size(1) || p.width != pixels.size(2) || p.channels != pixels.size(3))
    throw std::invalid_argument("augment_normalize: pixels " + pixels.str() + ", ids " + ids.str());
  Tensor out = Tensor::empty(pixels.shape(), dt, pixels.device());
  switch (dt) {
#define MLAI_AUG_CASE(ENUM, T)                                                              \
  case DType::ENUM:                                                                         \
    MLAI_CALL(pixels.device(), augment_normalize<T>, pixels.data<uint8_t>(),               \
              ids.data<int64_t>(), out.data<T>(), p);                                       \
    break;
    MLAI_AUG_CASE(kFloat32, float)
    MLAI_AUG_CASE(kFloat16, k::Half)
    MLAI_AUG_CASE(kBFloat16, k::BFloat16)
#undef MLAI_AUG_CASE
    default:
      throw_bad_dtype("augment_normalize", dt);
  }
  return out;
}

void confusion_update_(const Tensor& predicted, const Tensor& target, Tensor& confusion) {
  if (predicted.numel() != target.numel() || confusion.ndim() != 2 ||
      confusion.size(0) != confusion.size(1) || predicted.device() != confusion.device() ||
      target.device() != confusion.device())
    throw std::invalid_argument("confusion_update_: predicted " + predicted.str() + ", target " +
                                target.str() + ", matrix " + confusion.str());
  MLAI_CALL(confusion.device(), confusion_update, predicted.data<int64_t>(),
            target.data<int64_t>(), predicted.numel(), confusion.size(0),
            confusion.data<int64_t>());
}

namespace {
// Raw float pointers of a list of tensors, checked to match params[0]'s device and sizes.
std::vector<float*> ptrs(const std::vector<Tensor>& ts, const std::vector<Tensor>& params,
                         const char* what) {
  if (ts.size() != params.size())
    throw std::invalid_argument(std::string("optimizer step: ") + what + " list has " +
                                std::to_string(ts.size()) + " tensors for " +
                                std::to_string(params.size()) + " parameters");
  std::vector<float*> out;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].numel() != params[i].numel() || ts[i].device() != params[0].device())
      throw std::invalid_argument(std::string("optimizer step: ") + what + " " +
                                  std::to_string(i) + " is " + ts[i].str() + ", parameter is " +
                                  params[i].str());
    out.push_back(ts[i].data<float>());
  }
  return out;
}
std::vector<int64_t> sizes(const std::vector<Tensor>& ts) {
  std::vector<int64_t> s;
  for (const Tensor& t : ts) s.push_back(t.numel());
  return s;
}
const float* skip_ptr(const Tensor& skip_if) {
  return skip_if.defined() ? skip_if.data<float>() : nullptr;
}
}  // namespace

void sgd_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& momentum, const kernels::SgdArgs& args,
               const Tensor& skip_if) {
  if (params.empty()) return;
  const auto p = ptrs(params, params, "parameter");
  const auto g = ptrs(grads, params, "gradient");
  std::vector<float*> m(params.size(), nullptr);
  if (args.momentum != 0) m = ptrs(momentum, params, "momentum buffer");
  const auto n = sizes(params);
  [[maybe_unused]] const Device dev = params[0].device();
  MLAI_CALL(dev, sgd_step, p.data(), const_cast<const float* const*>(g.data()), m.data(),
            n.data(), static_cast<int>(n.size()), args, skip_ptr(skip_if));
}

void adam_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                const kernels::AdamArgs& args, const Tensor& skip_if) {
  if (params.empty()) return;
  const auto p = ptrs(params, params, "parameter");
  const auto g = ptrs(grads, params, "gradient");
  const auto m = ptrs(exp_avg, params, "exp_avg");
  const auto v = ptrs(exp_avg_sq, params, "exp_avg_sq");
  const auto n = sizes(params);
  [[maybe_unused]] const Device dev = params[0].device();
  MLAI_CALL(dev, adam_step, p.data(), const_cast<const float* const*>(g.data()), m.data(),
            v.data(), n.data(), static_cast<int>(n.size()), args, skip_ptr(skip_if));
}

}  // namespace mlai::tensor
