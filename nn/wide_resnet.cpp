// Zagoruyko and Komodakis's Wide Residual Networks for CIFAR (WRN-d-k, 2016): a 3x3 stem of
// 16 filters, then three groups of n = (d - 4) / 6 pre-activation blocks of 16k, 32k and 64k
// filters (stride 2 entering the last two), batch norm and relu, global average pool, fc.
// A block is bn1-relu-conv1 (3x3, the stride)-bn2-relu-[dropout]-conv2 (3x3), plus the input,
// or a 1x1 conv (the stride) of the pre-activated input where the shape changes, as in the
// authors' PyTorch code. Convolutions have no bias, kaiming-normal fan_out init, batch norm 1/0.
// --dropout is the dropout between the two convolutions (the paper's 0.3). wrn28_10 has
// 36,479,194 parameters on CIFAR-10 (the paper's 36.5M), wrn16_4 2,748,890 (2.7M).
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {

class WideBasic : public Module {
 public:
  WideBasic(int64_t in, int64_t out, int64_t stride, double dropout, uint64_t dropout_seed,
            Generator& gen) {
    bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(in));
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1, gen));
    bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
    if (dropout > 0)
      dropout_ = register_module("dropout", std::make_shared<Dropout>(dropout, dropout_seed));
    conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1, gen));
    if (stride != 1 || in != out)
      shortcut_ = register_module("shortcut", std::make_shared<Conv2d>(in, out, 1, stride, 0, gen));
  }
  // Each batch norm runs fused with its relu.
  Variable forward(const Variable& x) override {
    const Variable a = bn1_->forward_act(x, Variable(), true);
    Variable h = bn2_->forward_act((*conv1_)(a), Variable(), true);
    if (dropout_) h = (*dropout_)(h);
    h = (*conv2_)(h);
    return autograd::add(h, shortcut_ ? (*shortcut_)(a) : x);
  }
  std::string type_name() const override { return "WideBasic"; }

 private:
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Module> conv1_, conv2_, dropout_, shortcut_;
};

class WideResNet : public Module {
 public:
  WideResNet(const ModelSpec& s, int depth, int widen) {
    Generator gen(s.seed);
    const int n = (depth - 4) / 6;
    uint64_t dropout_seed = s.seed * 7919 + 1;
    conv1_ = register_module("conv1", std::make_shared<Conv2d>(s.channels, 16, 3, 1, 1, gen));
    int64_t in = 16;
    for (int g = 0; g < 3; ++g) {
      const int64_t out = (int64_t{16} << g) * widen;
      auto group = std::make_shared<Sequential>();
      for (int b = 0; b < n; ++b) {
        group->add(std::make_shared<WideBasic>(in, out, b == 0 && g > 0 ? 2 : 1, s.dropout,
                                               dropout_seed++, gen));
        in = out;
      }
      groups_.push_back(register_module("block" + std::to_string(g + 1), group));
    }
    bn_ = register_module("bn", std::make_shared<BatchNorm2d>(in));
    relu_ = register_module("relu", std::make_shared<ReLU>());  // fused into bn; kept for names
    avgpool_ = register_module("avgpool", std::make_shared<GlobalAvgPool>());
    fc_ = register_module("fc", std::make_shared<Linear>(in, s.num_classes, gen));
  }
  Variable forward(const Variable& x) override {
    Variable h = (*conv1_)(x);
    for (auto& g : groups_) h = (*g)(h);
    return (*fc_)((*avgpool_)(bn_->forward_act(h, Variable(), true)));
  }
  std::string type_name() const override { return "WideResNet"; }

 private:
  std::shared_ptr<Module> conv1_, relu_, avgpool_, fc_;
  std::shared_ptr<BatchNorm2d> bn_;
  std::vector<std::shared_ptr<Module>> groups_;
};

// wrn<d>_<k> for the usual depths and widths.
const bool kRegistered = [] {
  const std::pair<int, int> nets[] = {{16, 4}, {16, 8}, {22, 8}, {28, 10}, {40, 4}};
  for (auto [d, k] : nets)
    register_model("wrn" + std::to_string(d) + "_" + std::to_string(k),
                   [d, k](const ModelSpec& s) -> std::shared_ptr<Module> {
                     return std::make_shared<WideResNet>(s, d, k);
                   });
  return true;
}();

}  // namespace
}  // namespace mlai::nn
