// Cross-entropy over softmax, fused: the forward keeps each row's log-sum-exp, and the backward
// is one kernel reading the upstream gradient from device memory (no host sync).
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {

namespace t = mlai::tensor;

namespace {
struct CrossEntropyNode : Node {
  Tensor logits, labels, lse;
  double smoothing;
  Tensor weights, weight_total;  // class weights: the weighted mean's denominator
  double weight_sum = 0;
  std::vector<Tensor> backward(const Tensor& g) override {
    if (weights.defined())  // d(sum / W): the upstream gradient over W, on the device
      return {t::softmax_xent_backward(logits, labels, lse, t::div(g, weight_total), 1.0,
                                       smoothing, weights, weight_sum)};
    const double scale = 1.0 / static_cast<double>(logits.size(0));
    return {t::softmax_xent_backward(logits, labels, lse, g, scale, smoothing)};
  }
  const char* name() const override { return "CrossEntropyBackward"; }
};
}  // namespace

Variable cross_entropy(const Variable& logits, const Tensor& labels, double label_smoothing,
                       const ClassWeights* weights) {
  if (label_smoothing < 0 || label_smoothing > 1)
    throw std::invalid_argument("label smoothing must be in [0, 1], got " +
                                std::to_string(label_smoothing));
  const bool weighted = weights != nullptr && weights->values.defined();
  Tensor weight_rows, weight_total;
  auto [loss_rows, lse] = t::softmax_xent_forward(
      logits.data(), labels, label_smoothing, weighted ? weights->values : Tensor(),
      weighted ? &weight_rows : nullptr);
  Tensor loss;
  if (weighted) {
    weight_total = t::sum(weight_rows);
    loss = t::div(t::sum(loss_rows), weight_total);
  } else {
    loss = t::mean(loss_rows);
  }
  std::shared_ptr<CrossEntropyNode> node;
  if (needs_grad({&logits})) {
    node = std::make_shared<CrossEntropyNode>();
    node->logits = logits.data();
    node->labels = labels;
    node->lse = lse;
    node->smoothing = label_smoothing;
    if (weighted) {
      node->weights = weights->values;
      node->weight_total = weight_total;
      node->weight_sum = weights->sum;
    }
  }
  return make_result(loss, node, {&logits});
}

}  // namespace mlai::autograd
