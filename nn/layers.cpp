// Linear, Dropout.
#include "nn/layers.h"

#include <cmath>
#include <stdexcept>

namespace mlai::nn {

Linear::Linear(int64_t in, int64_t out, Generator& gen, bool bias) : in_(in), out_(out) {
  if (in <= 0 || out <= 0)
    throw std::invalid_argument("Linear: features must be positive, got " + std::to_string(in) +
                                " -> " + std::to_string(out));
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight_ = register_parameter("weight", Tensor::uniform({out, in}, -bound, bound, gen));
  if (bias) bias_ = register_parameter("bias", Tensor::uniform({out}, -bound, bound, gen));
}

Variable Linear::forward_fused(const Variable& x, bool apply_relu) {
  if (x.data().ndim() != 2 || x.size(1) != in_)
    throw std::invalid_argument("Linear(" + std::to_string(in_) + " -> " + std::to_string(out_) +
                                "): input of shape " + tensor::shape_str(x.shape()));
  return autograd::linear(x, use(weight_), use(bias_), apply_relu);
}

Dropout::Dropout(double p, uint64_t seed) : p_(p), gen_(seed) {
  if (p < 0 || p >= 1) throw std::invalid_argument("Dropout: p must be in [0, 1), got " + std::to_string(p));
}

Variable Dropout::forward(const Variable& x) {
  if (!is_training() || p_ == 0) return x;
  return autograd::dropout(x, p_, gen_);
}

LayerNorm::LayerNorm(int64_t c, double eps) : eps_(eps) {
  if (c <= 0) throw std::invalid_argument("LayerNorm: width must be positive, got " + std::to_string(c));
  weight_ = register_parameter("weight", Tensor::full({c}, 1.0));
  bias_ = register_parameter("bias", Tensor::zeros({c}));
}

Variable LayerNorm::forward(const Variable& x) {
  return autograd::layer_norm(x, use(weight_), use(bias_), eps_);
}

}  // namespace mlai::nn
