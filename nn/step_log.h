// Lightning's log_every_n_steps: the training loss and learning rate of every n-th optimizer
// step in TensorBoard (train/loss_step, train/lr_step), without stalling a GPU. The loss is
// copied to pinned memory at its step and written once the copy has landed: checked at the next
// record(), n steps later and long done, or at flush() (the epoch's end), which waits.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "io/tensorboard.h"
#include "tensor/stream.h"
#include "tensor/tensor.h"

namespace mlai::nn {

class StepScalars {
 public:
  // tb null (ranks other than 0, --fast-dev-run): record() does nothing.
  StepScalars(const tensor::Device& dev, io::EventWriter* tb) : dev_(dev), tb_(tb) {}
  ~StepScalars();  // copies still in flight land before their pinned buffers are released
  StepScalars(const StepScalars&) = delete;
  StepScalars& operator=(const StepScalars&) = delete;

  // loss: a float32 scalar on the device, the step's (last batch's) training loss; grad_sq:
  // undefined, or the squared gradient 2-norm (one float32 on the device), written as
  // train/grad_norm_step.
  void record(int64_t step, const tensor::Tensor& loss, double lr,
              const tensor::Tensor& grad_sq = tensor::Tensor());
  void flush();  // writes everything recorded (waiting for copies in flight) and flushes tb

 private:
  struct Pending {
    int64_t step;
    double lr, wall_time;
    tensor::Tensor host, host_norm;  // host_norm: undefined without a gradient norm
    tensor::Event landed;
  };
  void write_landed(bool wait);

  tensor::Device dev_;
  io::EventWriter* tb_;
  std::deque<Pending> pending_;
  std::vector<tensor::Tensor> spare_;  // pinned scalars to reuse (pinned allocation is slow)
};

}  // namespace mlai::nn
