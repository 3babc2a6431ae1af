// The image layers of ResNet, on NHWC activations: Conv2d (OHWI filters), BatchNorm2d (eps 1e-5,
// momentum 0.1, running statistics as PyTorch), MaxPool2d, AdaptiveAvgPool2d(1) (+ flatten).
// Parameter and buffer names follow torch.nn ("weight", "bias", "running_mean", "running_var",
// "num_batches_tracked").
#pragma once

#include "nn/module.h"

namespace mlai::nn {

// Layer fusion, on by default: BatchNorm2d::forward_act as one op (batch norm, residual add and
// relu in one pass) and the cuBLASLt bias(+relu) / bias-gradient epilogues of Linear on CUDA.
// Off runs the separate ops (same results up to rounding): for benchmarks' A/B and debugging.
void set_layer_fusion(bool on);
bool layer_fusion();

// Filters [out, kh, kw, in / groups]; init: kaiming_normal(mode=fan_out, relu) as torchvision's
// ResNet and MobileNet (std = sqrt(2 / (out * kh * kw)), whatever the groups, as torch's fan_out);
// bias zero when present. groups as torch.nn.Conv2d's: ResNeXt's grouped 3x3 convolutions, and
// depthwise ones with groups = in = out.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad, Generator& gen,
         bool bias = false, int64_t groups = 1);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Conv2d"; }

 private:
  int64_t in_, stride_, pad_, groups_;
  Variable weight_, bias_;
};

class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Variable forward(const Variable& x) override;
  // act(bn(x) + residual) in one op (residual may be undefined, the activation off; true:
  // relu, kernels::BnAct::kRelu6: MobileNet's relu6): ResNet's epilogue. Same numbers as
  // forward() followed by the add and the activation, up to rounding.
  Variable forward_act(const Variable& x, const Variable& residual, kernels::BnAct act);
  std::string type_name() const override { return "BatchNorm2d"; }
  // Counts one training batch in num_batches_tracked (forward does, except while a CUDA graph
  // is being captured: a replayed graph would repeat one fixed count, so --cuda-graphs calls
  // this after each replay instead).
  void count_batch();
  // torch.optim.swa_utils.update_bn: running_mean 0, running_var 1, num_batches_tracked 0; and
  // with cumulative, training batches update the statistics as momentum=None does: each batch
  // weighs 1 / num_batches_tracked, so they become the plain mean over the batches seen.
  void reset_running_stats();
  void set_cumulative(bool on) { cumulative_ = on; }
  // torch's track_running_stats = False on a layer that has running statistics (what
  // Lightning's BaseFinetuning.freeze does to batch norm with train_bn=False): training batches
  // are normalised with their own statistics but leave running_mean, running_var and
  // num_batches_tracked as they are (reset_running_stats too); evaluation still uses the
  // running statistics.
  void set_track_running_stats(bool on) { track_ = on; }
  bool track_running_stats() const { return track_; }
  // --sync-bn: training statistics over all `world` ranks' batches (autograd::sync_batchnorm),
  // combined with `sum_over_ranks`; world 1 (or no function) is plain batch norm.
  void set_sync(autograd::SumOverRanks sum_over_ranks, int world) {
    sync_ = std::move(sum_over_ranks);
    world_ = world;
  }

 protected:
  bool low_precision_parameters() const override { return false; }  // float32 under AMP

 private:
  double eps_, momentum_;
  Variable weight_, bias_;
  Tensor* running_mean_;
  Tensor* running_var_;
  Tensor* num_batches_tracked_;
  int64_t batches_ = -1;  // host copy of num_batches_tracked (-1: not read yet)
  bool cumulative_ = false;
  bool track_ = true;
  autograd::SumOverRanks sync_;
  int world_ = 1;
};

// Every BatchNorm2d in m (m itself included), depth first; with their dotted names
// ("layer1.0.bn1"; "" for m itself).
std::vector<BatchNorm2d*> batch_norms(Module& m);
std::vector<std::pair<std::string, BatchNorm2d*>> named_batch_norms(Module& m);

class MaxPool2d : public Module {
 public:
  MaxPool2d(int64_t kernel, int64_t stride, int64_t pad) : k_(kernel), s_(stride), p_(pad) {}
  Variable forward(const Variable& x) override { return autograd::maxpool2d(x, k_, s_, p_); }
  std::string type_name() const override { return "MaxPool2d"; }

 private:
  int64_t k_, s_, p_;
};

// AdaptiveAvgPool2d((1, 1)) and the flatten after it: [n, h, w, c] -> [n, c].
class GlobalAvgPool : public Module {
 public:
  Variable forward(const Variable& x) override { return autograd::global_avgpool(x); }
  std::string type_name() const override { return "AdaptiveAvgPool2d"; }
};

}  // namespace mlai::nn
