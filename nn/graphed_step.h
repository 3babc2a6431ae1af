// --cuda-graphs: a whole training step (zero_grad, forward, loss, backward, and the optimizer
// step with the loss scaler's check and update) captured once into a CUDA graph
// (tensor/cuda_graph.h) and replayed every step after, so the mlp's few dozen small kernels
// cost one launch of host time. The batch is copied into fixed input buffers first, and the
// logits and loss come back in fixed output buffers. The first `warmup` steps run the same body
// eagerly on those buffers: cuDNN's algorithm search, cuBLASLt's heuristics, the gradient
// buffers and the allocator's cache must all exist before the capture. What changes from step
// to step lives on the device: the optimizer is capturable (Optimizer::set_capturable: the
// caller stages the rate and step number before each run), the scaler's state and skipped-step
// count are device tensors. Metrics stay eager.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "tensor/cuda_graph.h"

namespace mlai::nn {

class BatchNorm2d;

class GraphedStep {
 public:
  // The step's body on (images, labels): zero the gradients, run forward, loss and backward,
  // and return the logits' and the loss's tensors.
  using Body = std::function<std::pair<Tensor, Tensor>(const Tensor& images, const Tensor& labels)>;

  explicit GraphedStep(Module& model, int warmup = 3);
  // Runs body for this batch, through the graph once warm. Returns false, having done nothing,
  // when the batch's shapes or dtypes differ from the first batch's (an epoch's last, smaller
  // batch): the caller runs that one eagerly.
  bool run(const Tensor& images, const Tensor& labels, const Body& body);
  const Tensor& logits() const { return logits_; }
  const Tensor& loss() const { return loss_; }

 private:
  std::vector<BatchNorm2d*> batch_norms_;  // counted on the host after each replay
  Tensor images_, labels_, logits_, loss_;
  tensor::CudaGraph graph_;
  int warmup_left_;
};

}  // namespace mlai::nn
