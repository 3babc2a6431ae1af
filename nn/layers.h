// Basic layers: Linear (PyTorch's default init), ReLU, Dropout, Flatten.
#pragma once

#include "nn/module.h"

namespace mlai::nn {

// y = x W^T + b. Init as torch.nn.Linear: kaiming_uniform(a=sqrt(5)) for W, which is
// U(-1/sqrt(in), 1/sqrt(in)), and the same bound for b.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Variable forward(const Variable& x) override { return forward_fused(x, false); }
  Variable forward_fused(const Variable& x, bool apply_relu);
  std::string type_name() const override { return "Linear"; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_, out_;
  Variable weight_, bias_;
};

class ReLU : public Module {
 public:
  Variable forward(const Variable& x) override { return autograd::relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

class ReLU6 : public Module {
 public:
  Variable forward(const Variable& x) override { return autograd::relu6(x); }
  std::string type_name() const override { return "ReLU6"; }
};

// torch.nn.GELU() (the exact, erf form), the transformer MLP's activation.
class GELU : public Module {
 public:
  Variable forward(const Variable& x) override { return autograd::gelu(x); }
  std::string type_name() const override { return "GELU"; }
};

// torch.nn.LayerNorm(c, eps) over the last dimension: weight 1 and bias 0 at the start. Its
// parameters stay float32 under mixed precision, as batch norm's (the kernels read them in
// float32 beside fp16/bf16 activations).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t c, double eps = 1e-5);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "LayerNorm"; }

 protected:
  bool low_precision_parameters() const override { return false; }

 private:
  double eps_;
  Variable weight_, bias_;
};

class Flatten : public Module {
 public:
  Variable forward(const Variable& x) override { return autograd::flatten(x, 1); }
  std::string type_name() const override { return "Flatten"; }
};

// Zeroes each element with probability p in training (scaling the rest by 1/(1-p)); identity
// in eval. Draws from its own counter-based generator, so runs are reproducible.
class Dropout : public Module {
 public:
  Dropout(double p, uint64_t seed);
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Dropout"; }
  Generator* generator() override { return &gen_; }

 private:
  double p_;
  Generator gen_;
};

}  // namespace mlai::nn
