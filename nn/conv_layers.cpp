// Conv2d and BatchNorm2d.
#include "nn/conv_layers.h"

#include <atomic>
#include <cmath>
#include <stdexcept>

#include "tensor/cuda_graph.h"
#include "tensor/linear_ops.h"
#include "tensor/ops.h"

namespace mlai::nn {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad, Generator& gen,
               bool bias, int64_t groups)
    : in_(in), stride_(stride), pad_(pad), groups_(groups) {
  if (in < 1 || out < 1 || kernel < 1 || stride < 1 || pad < 0 || groups < 1 || in % groups != 0 ||
      out % groups != 0)
    throw std::invalid_argument("Conv2d: bad configuration");
  const double std = std::sqrt(2.0 / static_cast<double>(out * kernel * kernel));
  weight_ = register_parameter("weight",
                               Tensor::normal({out, kernel, kernel, in / groups}, 0.0, std, gen));
  if (bias) bias_ = register_parameter("bias", Tensor::zeros({out}));
}

Variable Conv2d::forward(const Variable& x) {
  if (x.data().ndim() != 4 || x.size(3) != in_)
    throw std::invalid_argument("Conv2d(" + std::to_string(in_) + " channels): input of shape " +
                                tensor::shape_str(x.shape()) + " (NHWC expected)");
  return autograd::conv2d(x, use(weight_), use(bias_), stride_, pad_, groups_);
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum)
    : eps_(eps), momentum_(momentum) {
  weight_ = register_parameter("weight", Tensor::full({channels}, 1.0));
  bias_ = register_parameter("bias", Tensor::zeros({channels}));
  register_buffer("running_mean", Tensor::zeros({channels}));
  register_buffer("running_var", Tensor::full({channels}, 1.0));
  register_buffer("num_batches_tracked", Tensor::zeros({}, DType::kInt64));
  // Pointers taken once all three exist (registering moves the vector that holds them).
  const auto b = named_buffers();
  running_mean_ = b[0].second;
  running_var_ = b[1].second;
  num_batches_tracked_ = b[2].second;
}

namespace {
std::atomic<bool> g_fusion{true};
}  // namespace

void set_layer_fusion(bool on) {
  g_fusion.store(on);
  tensor::set_gemm_epilogues(on);
}
bool layer_fusion() { return g_fusion.load(); }

Variable BatchNorm2d::forward(const Variable& x) { return forward_act(x, Variable(), false); }

void BatchNorm2d::count_batch() {
  // Counted on the host and written with a fill; the buffer is read once (it may have been
  // loaded from a checkpoint), never per step.
  if (batches_ < 0) batches_ = static_cast<int64_t>(num_batches_tracked_->item());
  tensor::fill_(*num_batches_tracked_, static_cast<double>(++batches_));
}

namespace {
void collect_batch_norms(Module& m, const std::string& name,
                         std::vector<std::pair<std::string, BatchNorm2d*>>& out) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) out.emplace_back(name, bn);
  for (const auto& [n, c] : m.children())
    collect_batch_norms(*c, name.empty() ? n : name + "." + n, out);
}
}  // namespace

std::vector<std::pair<std::string, BatchNorm2d*>> named_batch_norms(Module& m) {
  std::vector<std::pair<std::string, BatchNorm2d*>> out;
  collect_batch_norms(m, "", out);
  return out;
}

std::vector<BatchNorm2d*> batch_norms(Module& m) {
  std::vector<BatchNorm2d*> out;
  for (const auto& [name, bn] : named_batch_norms(m)) out.push_back(bn);
  return out;
}

void BatchNorm2d::reset_running_stats() {
  if (!track_) return;  // (torch: a layer not tracking keeps what it has; update_bn skips it)
  tensor::fill_(*running_mean_, 0.0);
  tensor::fill_(*running_var_, 1.0);
  tensor::fill_(*num_batches_tracked_, 0.0);
  batches_ = 0;
}

Variable BatchNorm2d::forward_act(const Variable& x, const Variable& residual, kernels::BnAct act) {
  ModuleFlops::Scope flops(this);  // (none of its own: so the summary says 0, not "did not run")
  if (is_training() && track_ && !tensor::capturing(x.data().device())) count_batch();
  // momentum=None: the k-th batch since the reset weighs 1/k (a cumulative mean).
  const double momentum =
      cumulative_ && batches_ > 0 ? 1.0 / static_cast<double>(batches_) : momentum_;
  // Not tracking (torch's track_running_stats=False): training gets no running statistics to
  // update (undefined tensors), so not even a non-finite batch can reach them.
  Tensor untracked_mean, untracked_var;
  const bool untracked = is_training() && !track_;
  Tensor& rm = untracked ? untracked_mean : *running_mean_;
  Tensor& rv = untracked ? untracked_var : *running_var_;
  const bool sync = is_training() && sync_ && world_ > 1;
  if (sync || !layer_fusion()) {
    Variable out = sync ? autograd::sync_batchnorm(x, weight_, bias_, rm, rv, momentum, eps_,
                                                   world_, sync_)
                        : autograd::batchnorm(x, weight_, bias_, rm, rv, is_training(), momentum,
                                              eps_);
    if (residual.defined()) out = autograd::add(out, residual);
    return autograd::activate(out, act);
  }
  if (!residual.defined() && !act)  // plain: cuDNN's batch norm on CUDA
    return autograd::batchnorm(x, weight_, bias_, rm, rv, is_training(), momentum, eps_);
  return autograd::batchnorm_act(x, weight_, bias_, residual, act, rm, rv, is_training(), momentum,
                                 eps_);
}

}  // namespace mlai::nn
