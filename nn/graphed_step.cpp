// GraphedStep (see graphed_step.h).
#include "nn/graphed_step.h"

#include <stdexcept>
#include <tuple>

#include "nn/conv_layers.h"

namespace mlai::nn {

GraphedStep::GraphedStep(Module& model, int warmup) : warmup_left_(warmup) {
  std::vector<Module*> stack{&model};
  while (!stack.empty()) {
    Module* m = stack.back();
    stack.pop_back();
    if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) batch_norms_.push_back(bn);
    for (auto& [n, c] : m->children()) stack.push_back(c.get());
  }
}

bool GraphedStep::run(const Tensor& images, const Tensor& labels, const Body& body) {
  if (!images.device().is_cuda())
    throw std::invalid_argument("--cuda-graphs needs a CUDA device (the batch is on " +
                                images.device().str() + ")");
  if (!images_.defined()) {  // the first batch fixes the shapes
    images_ = Tensor::empty(images.shape(), images.dtype(), images.device());
    labels_ = Tensor::empty(labels.shape(), labels.dtype(), labels.device());
  }
  if (images.shape() != images_.shape() || images.dtype() != images_.dtype() ||
      labels.shape() != labels_.shape() || labels.dtype() != labels_.dtype())
    return false;
  images_.copy_from(images, true);  // on the current stream, ahead of the step: no host wait
  labels_.copy_from(labels, true);
  if (warmup_left_ > 0) {
    --warmup_left_;
    std::tie(logits_, loss_) = body(images_, labels_);
    return true;
  }
  if (!graph_.captured()) {
    // The outputs allocated during the capture live in the graph's pool; keeping them here
    // keeps their memory the graph's until it is gone.
    graph_.capture(images_.device(), [&] { std::tie(logits_, loss_) = body(images_, labels_); });
  }
  graph_.replay();
  for (BatchNorm2d* bn : batch_norms_)
    if (bn->track_running_stats()) bn->count_batch();
  return true;
}

}  // namespace mlai::nn
