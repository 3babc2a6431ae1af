// Dropout and multi-tensor optimizer steps: validation and dispatch.
#include "tensor/fused_ops.h"

#include <algorithm>
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
  // On a GPU each sample's decisions are drawn once into this workspace (device memory).
  Tensor choices;
  if (pixels.device().is_cuda())
    choices = Tensor::empty({p.batch * static_cast<int64_t>(sizeof(kernels::AugmentChoice))},
                            DType::kUInt8, pixels.device());
  auto* ws = choices.defined() ? reinterpret_cast<kernels::AugmentChoice*>(choices.data<uint8_t>())
                               : nullptr;
  if (dt == DType::kUInt8) {
    if (p.erase_p > 0)
      throw std::invalid_argument("augment_normalize: uint8 output cannot erase (normalize first)");
    MLAI_CALL(pixels.device(), augment_normalize<uint8_t>, pixels.data<uint8_t>(),
              ids.data<int64_t>(), out.data<uint8_t>(), p, ws);
    return out;
  }
  MLAI_DISPATCH_TRAINING(dt, "augment_normalize",
                         MLAI_CALL(pixels.device(), augment_normalize<scalar_t>,
                                   pixels.data<uint8_t>(), ids.data<int64_t>(),
                                   out.data<scalar_t>(), p, ws));
  return out;
}

Tensor auto_augment(const Tensor& pixels, const Tensor& ids, const kernels::AutoAugmentParams& p) {
  if (pixels.dtype() != DType::kUInt8 || pixels.ndim() != 4 || ids.dtype() != DType::kInt64 ||
      ids.numel() != pixels.size(0) || pixels.device() != ids.device() ||
      (p.channels != 1 && p.channels != 3) || p.batch != pixels.size(0) ||
      p.height != pixels.size(1) || p.width != pixels.size(2) || p.channels != pixels.size(3) ||
      p.num_ops < 0 || p.num_ops > kernels::kMaxRandAugmentOps || p.num_bins < 1 ||
      p.magnitude < 0 || p.magnitude >= p.num_bins || p.severity < 1 || p.severity > 10)
    throw std::invalid_argument(
        "auto_augment: pixels " + pixels.str() + ", ids " + ids.str() +
        " (1 or 3 channels; RandAugment's ops <= " + std::to_string(kernels::kMaxRandAugmentOps) +
        ", magnitude below the bins; AugMix's severity 1 to 10)");
  Tensor out = Tensor::empty(pixels.shape(), DType::kUInt8, pixels.device());
#ifdef MLAI_WITH_CUDA
  if (pixels.device().is_cuda()) {
    Tensor scratch = Tensor::empty({2 * pixels.numel()}, DType::kUInt8, pixels.device());
    Tensor mix;  // AugMix's float sums
    if (p.policy == kernels::AutoAugmentPolicy::kAugMix)
      mix = Tensor::empty(pixels.shape(), DType::kFloat32, pixels.device());
    Tensor plans = Tensor::empty({p.batch * static_cast<int64_t>(sizeof(kernels::AutoAugmentPlan))},
                                 DType::kUInt8, pixels.device());
    k::cuda::auto_augment(pixels.data<uint8_t>(), ids.data<int64_t>(), out.data<uint8_t>(),
                          scratch.data<uint8_t>(), mix.defined() ? mix.data<float>() : nullptr,
                          reinterpret_cast<kernels::AutoAugmentPlan*>(plans.data<uint8_t>()), p,
                          current_stream(pixels.device()).handle());
    return out;
  }
#endif
  k::cpu::auto_augment(pixels.data<uint8_t>(), ids.data<int64_t>(), out.data<uint8_t>(), p);
  return out;
}

Tensor mix_batch(const Tensor& images, const kernels::MixParams& p) {
  if (images.ndim() != 4 || p.batch != images.size(0) || p.height != images.size(1) ||
      p.width != images.size(2) || p.channels != images.size(3) || p.y1 < 0 || p.y1 > p.y2 ||
      p.y2 > p.height || p.x1 < 0 || p.x1 > p.x2 || p.x2 > p.width)
    throw std::invalid_argument("mix_batch: images " + images.str() + ", box rows [" +
                                std::to_string(p.y1) + ", " + std::to_string(p.y2) +
                                "), columns [" + std::to_string(p.x1) + ", " +
                                std::to_string(p.x2) + ")");
  Tensor out = Tensor::empty(images.shape(), images.dtype(), images.device());
  MLAI_DISPATCH_TRAINING(images.dtype(), "mix_batch",
                         MLAI_CALL(images.device(), mix_batch<scalar_t>, images.data<scalar_t>(),
                                   out.data<scalar_t>(), p));
  return out;
}

Tensor roll_rows(const Tensor& t) {
  if (t.ndim() == 0) throw std::invalid_argument("roll_rows: " + t.str() + " has no rows");
  const int64_t n = t.size(0);
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  if (n == 0) return out;
  if (n > 1) out.slice(1, n).copy_from(t.slice(0, n - 1));
  out.slice(0, 1).copy_from(t.slice(n - 1, n));
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

void topk_hits_(const Tensor& logits, const Tensor& target, int64_t k, Tensor& hits) {
  if (logits.ndim() != 2 || target.numel() != logits.size(0) || hits.numel() != 1 ||
      hits.dtype() != DType::kInt64 || target.dtype() != DType::kInt64 || k < 1 ||
      logits.device() != hits.device() || target.device() != hits.device())
    throw std::invalid_argument("topk_hits_: logits " + logits.str() + ", target " +
                                target.str() + ", hits " + hits.str() + ", k " +
                                std::to_string(k));
  MLAI_DISPATCH_FLOAT(logits.dtype(), "topk_hits",
                      MLAI_CALL(logits.device(), topk_hits<scalar_t>, logits.data<scalar_t>(),
                                target.data<int64_t>(), logits.size(0), logits.size(1), k,
                                hits.data<int64_t>()));
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
    if (ts[i].numel() != params[i].numel() || ts[i].device() != params[0].device() ||
        ts[i].dtype() != DType::kFloat32)
      throw std::invalid_argument(std::string("optimizer step: ") + what + " " +
                                  std::to_string(i) + " is " + ts[i].str() + ", parameter is " +
                                  params[i].str() + " (float32 expected)");
    out.push_back(ts[i].data<float>());
  }
  return out;
}
std::vector<int64_t> sizes(const std::vector<Tensor>& ts) {
  std::vector<int64_t> s;
  for (const Tensor& t : ts) s.push_back(t.numel());
  return s;
}
// A device value the optimizer kernels read (inv_scale, skip_if, step_offset, lr_and_step):
// undefined (null), or at least `count` elements of dtype T on the parameters' device.
template <class T>
const T* opt_ptr(const Tensor& t, const Device& dev, const char* what, int64_t count = 1) {
  if (!t.defined()) return nullptr;
  const DType want = dtype_of<T>();
  if (t.dtype() != want || t.device() != dev || t.numel() < count)
    throw std::invalid_argument(std::string("optimizer step: ") + what + " is " + t.str() +
                                " (" + std::to_string(count) + " " + dtype_name(want) +
                                " value(s) on " + dev.str() + " expected)");
  return t.data<T>();
}

// The tensors of one launch family: those whose gradients share a dtype.
struct StepGroup {
  DType grad_dtype;
  std::vector<size_t> index;
};
std::vector<StepGroup> by_grad_dtype(const std::vector<Tensor>& params,
                                     const std::vector<Tensor>& grads,
                                     const std::vector<Tensor>& working) {
  if (grads.size() != params.size() || (!working.empty() && working.size() != params.size()))
    throw std::invalid_argument("optimizer step: " + std::to_string(params.size()) +
                                " parameters, " + std::to_string(grads.size()) + " gradients, " +
                                std::to_string(working.size()) + " working copies");
  std::vector<StepGroup> groups;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& g = grads[i];
    if (g.numel() != params[i].numel() || g.device() != params[0].device())
      throw std::invalid_argument("optimizer step: gradient " + std::to_string(i) + " is " +
                                  g.str() + ", parameter is " + params[i].str());
    if (!working.empty() && working[i].defined() &&
        (working[i].dtype() != g.dtype() || working[i].numel() != g.numel() ||
         working[i].device() != g.device()))
      throw std::invalid_argument("optimizer step: working copy " + std::to_string(i) + " is " +
                                  working[i].str() + ", its gradient " + g.str());
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const StepGroup& sg) { return sg.grad_dtype == g.dtype(); });
    if (it == groups.end()) {
      groups.push_back({g.dtype(), {}});
      it = groups.end() - 1;
    }
    it->index.push_back(i);
  }
  return groups;
}

template <class T>
std::vector<T> pick(const std::vector<T>& v, const std::vector<size_t>& index) {
  std::vector<T> out;
  if (v.empty()) return out;
  for (size_t i : index) out.push_back(v[i]);
  return out;
}

// Calls FN<G> with typed gradient and working-copy pointer arrays for one StepGroup.
template <class Fn>
void with_typed(const StepGroup& sg, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, Fn fn) {
  std::vector<void*> g, w;
  bool any_working = false;
  for (size_t i : sg.index) {
    g.push_back(grads[i].data_ptr());
    const bool has = !working.empty() && working[i].defined();
    w.push_back(has ? working[i].data_ptr() : nullptr);
    any_working |= has;
  }
  MLAI_DISPATCH_TRAINING(sg.grad_dtype, "optimizer step (gradient)",
                         fn(reinterpret_cast<const scalar_t* const*>(g.data()),
                            any_working ? reinterpret_cast<scalar_t* const*>(w.data())
                                        : static_cast<scalar_t* const*>(nullptr)));
}

// The device values of a step (kernels/optim.h): args' step_offset and lr_and_step, inv_scale
// and skip_if, checked against the parameters' device.
struct StepCall {
  Device dev;
  const float* inv = nullptr;
  const float* skip = nullptr;
  // Per gradient dtype: the group, its parameters, their pointers and sizes.
  const StepGroup* sg = nullptr;
  std::vector<Tensor> ps;
  std::vector<float*> p;
  std::vector<int64_t> n;
};
// The part of a step's arguments that holds its device values (LARS's and LAMB's are their
// SGD's and Adam's).
template <class Args>
Args& device_part(Args& a) {
  return a;
}
kernels::SgdArgs& device_part(kernels::LarsArgs& a) { return a.sgd; }
kernels::AdamArgs& device_part(kernels::LambArgs& a) { return a.adam; }

template <class Args, class Launch>
void fused_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const Args& in, const Tensor& inv_scale,
                const Tensor& skip_if, const Tensor& step_offset, const Tensor& lr_and_step,
                Launch launch) {
  if (params.empty()) return;
  const Device dev = params[0].device();
  Args args = in;
  device_part(args).step_offset = opt_ptr<int64_t>(step_offset, dev, "step_offset");
  device_part(args).lr_and_step = opt_ptr<double>(lr_and_step, dev, "lr_and_step {lr, step}", 2);
  StepCall c;
  c.dev = dev;
  c.inv = opt_ptr<float>(inv_scale, dev, "inv_scale");
  c.skip = opt_ptr<float>(skip_if, dev, "skip_if");
  for (const StepGroup& sg : by_grad_dtype(params, grads, working)) {
    c.sg = &sg;
    c.ps = pick(params, sg.index);
    c.p = ptrs(c.ps, c.ps, "parameter");
    c.n = sizes(c.ps);
    launch(c, static_cast<const Args&>(args));
  }
}

// The CUDA LARS/LAMB steps' double scratch (kernels::trust_scratch_size), grown as needed.
double* trust_scratch(Tensor* scratch, const StepCall& c) {
  if (!c.dev.is_cuda()) return nullptr;
  if (scratch == nullptr)
    throw std::invalid_argument("optimizer step: LARS/LAMB need a scratch tensor on a GPU");
  const int64_t need = kernels::trust_scratch_size(c.n.data(), static_cast<int>(c.n.size()));
  if (!scratch->defined() || scratch->device() != c.dev || scratch->numel() < need)
    *scratch = Tensor::empty({need}, DType::kFloat64, c.dev);
  return scratch->data<double>();
}

// The momentum buffers of a step's group (null pointers without momentum).
std::vector<float*> momentum_ptrs(const std::vector<Tensor>& momentum, double mom,
                                  const StepCall& c) {
  if (mom == 0) return std::vector<float*>(c.ps.size(), nullptr);
  return ptrs(pick(momentum, c.sg->index), c.ps, "momentum buffer");
}
}  // namespace

void sgd_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
               const std::vector<Tensor>& working, const std::vector<Tensor>& momentum,
               const kernels::SgdArgs& sgd, const Tensor& inv_scale, const Tensor& skip_if,
               const Tensor& step_offset, const Tensor& lr_and_step) {
  fused_step(params, grads, working, sgd, inv_scale, skip_if, step_offset, lr_and_step,
             [&](const StepCall& c, const kernels::SgdArgs& args) {
               const auto m = momentum_ptrs(momentum, args.momentum, c);
               with_typed(*c.sg, grads, working, [&](auto g, auto w) {  // G deduced from g
                 MLAI_CALL(c.dev, sgd_step, c.p.data(), g, w, m.data(), c.n.data(),
                           static_cast<int>(c.n.size()), args, c.inv, c.skip);
               });
             });
}

void adam_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& exp_avg,
                const std::vector<Tensor>& exp_avg_sq, const kernels::AdamArgs& adam,
                const Tensor& inv_scale, const Tensor& skip_if, const Tensor& step_offset,
                const Tensor& lr_and_step) {
  fused_step(params, grads, working, adam, inv_scale, skip_if, step_offset, lr_and_step,
             [&](const StepCall& c, const kernels::AdamArgs& args) {
               const auto m = ptrs(pick(exp_avg, c.sg->index), c.ps, "exp_avg");
               const auto v = ptrs(pick(exp_avg_sq, c.sg->index), c.ps, "exp_avg_sq");
               with_typed(*c.sg, grads, working, [&](auto g, auto w) {
                 MLAI_CALL(c.dev, adam_step, c.p.data(), g, w, m.data(), v.data(), c.n.data(),
                           static_cast<int>(c.n.size()), args, c.inv, c.skip);
               });
             });
}

void lars_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& momentum,
                const kernels::LarsArgs& lars, Tensor* scratch, const Tensor& inv_scale,
                const Tensor& skip_if, const Tensor& step_offset, const Tensor& lr_and_step) {
  fused_step(params, grads, working, lars, inv_scale, skip_if, step_offset, lr_and_step,
             [&](const StepCall& c, const kernels::LarsArgs& args) {
               const auto m = momentum_ptrs(momentum, args.sgd.momentum, c);
               double* work = trust_scratch(scratch, c);
               with_typed(*c.sg, grads, working, [&](auto g, auto w) {
                 MLAI_CALL(c.dev, lars_step, c.p.data(), g, w, m.data(), c.n.data(),
                           static_cast<int>(c.n.size()), args, c.inv, c.skip, work);
               });
             });
}

void lamb_step_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& working, const std::vector<Tensor>& exp_avg,
                const std::vector<Tensor>& exp_avg_sq, const kernels::LambArgs& lamb,
                Tensor* scratch, const Tensor& inv_scale, const Tensor& skip_if,
                const Tensor& step_offset, const Tensor& lr_and_step) {
  fused_step(params, grads, working, lamb, inv_scale, skip_if, step_offset, lr_and_step,
             [&](const StepCall& c, const kernels::LambArgs& args) {
               const auto m = ptrs(pick(exp_avg, c.sg->index), c.ps, "exp_avg");
               const auto v = ptrs(pick(exp_avg_sq, c.sg->index), c.ps, "exp_avg_sq");
               double* work = trust_scratch(scratch, c);
               with_typed(*c.sg, grads, working, [&](auto g, auto w) {
                 MLAI_CALL(c.dev, lamb_step, c.p.data(), g, w, m.data(), v.data(), c.n.data(),
                           static_cast<int>(c.n.size()), args, c.inv, c.skip, work);
               });
             });
}

void ema_update_(const std::vector<Tensor>& avg, const std::vector<Tensor>& cur, double decay) {
  if (avg.size() != cur.size())
    throw std::invalid_argument("ema_update_: " + std::to_string(avg.size()) + " averages for " +
                                std::to_string(cur.size()) + " tensors");
  if (avg.empty()) return;
  const Device dev = avg[0].device();
  std::vector<float*> a;
  std::vector<const float*> c;
  for (size_t i = 0; i < avg.size(); ++i) {
    if (avg[i].dtype() != DType::kFloat32 || cur[i].dtype() != DType::kFloat32 ||
        avg[i].numel() != cur[i].numel() || avg[i].device() != dev || cur[i].device() != dev)
      throw std::invalid_argument("ema_update_: average " + std::to_string(i) + " is " +
                                  avg[i].str() + ", tensor " + cur[i].str() +
                                  " (float32 of one size, on " + dev.str() + ", expected)");
    a.push_back(avg[i].data<float>());
    c.push_back(cur[i].data<float>());
  }
  // Each average written once and read from nowhere else: a repeated or aliased one would race
  // on a GPU.
  std::vector<const float*> written(a.begin(), a.end());
  std::sort(written.begin(), written.end());
  bool aliased = std::adjacent_find(written.begin(), written.end()) != written.end();
  for (const float* src : c) aliased |= std::binary_search(written.begin(), written.end(), src);
  if (aliased)
    throw std::invalid_argument("ema_update_: an average appears twice, or is also a source");
  const auto n = sizes(avg);
  MLAI_CALL(dev, ema_update, a.data(), c.data(), n.data(), static_cast<int>(n.size()),
            static_cast<float>(decay), static_cast<float>(1.0 - decay));
}

}  // namespace mlai::tensor
