// The exponential moving average of a model's weights, as Lightning's WeightAveraging callback
// keeps it with torch.optim.swa_utils.get_ema_avg_fn (an AveragedModel with use_buffers=True):
// float32 parameters and floating buffers (batch-norm running statistics) are averaged after
// each optimizer step, integer buffers (num_batches_tracked) copied; the first update copies
// the model. The trainer validates, checkpoints and tests with the average (see trainer.h).
// Under ZeRO (nn/zero.h) the average is sharded as the optimizer state is: a rank keeps the
// average of the parameters it owns (and of every buffer) and never holds the rest, so it
// updates, swaps and copies those alone; a checkpoint's write gathers the others to rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace mlai::nn {

class WeightAverage {
 public:
  // Starts as a copy of the model's parameters and buffers, on their device. keep (parallel to
  // the model's named_tensors(); empty: all): the tensors this rank averages (ZeRO: the
  // parameters it owns, and every buffer); the others are never allocated (named() gives them
  // undefined), and update/swap/copy_to/copy_from pass them by.
  WeightAverage(Module& model, double decay, std::vector<bool> keep = {});
  bool keeps(size_t i) const { return keep_.empty() || keep_[i]; }
  // After a checkpoint's write filled them (ZeroRedundancy::gather_to_rank0 on rank 0): the
  // tensors this rank does not keep are dropped again.
  void drop_others();
  // Bytes of the average this rank holds.
  int64_t bytes() const;

  // avg = decay * avg + (1 - decay) * model (a few fused launches); the first update copies.
  void update(Module& model);
  // The same with this update's decay (SWA's equal average: updates() / (updates() + 1)).
  void update(Module& model, double decay);
  // Exchanges the average's values with the model's, in place (the model's tensors keep their
  // storage, so CUDA graphs and optimizer pointers stay valid), and refreshes the model's
  // fp16/bf16 working copies. Twice is the identity.
  void swap(Module& model);
  // The model takes the average's values (Lightning's on_train_end).
  void copy_to(Module& model);
  // The model's values become the average's (a checkpoint's averaged weights, on resume).
  void copy_from(Module& model);

  int64_t updates() const { return updates_; }  // AveragedModel's n_averaged
  void set_updates(int64_t n) { updates_ = n; }
  double decay() const { return decay_; }
  // The average's tensors, named as the model's parameters and buffers (checkpoint order);
  // undefined where this rank does not keep them.
  std::vector<std::pair<std::string, Tensor*>> named();

 private:
  double decay_;
  int64_t updates_ = 0;
  std::vector<std::pair<std::string, Tensor>> avg_;
  std::vector<bool> keep_;  // (empty: every one)
  // The model's tensors, checked against the average's names (a model built differently).
  std::vector<std::pair<std::string, Tensor*>> model_tensors(Module& model) const;
};

}  // namespace mlai::nn
