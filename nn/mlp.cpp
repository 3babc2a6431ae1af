// mlp: the classic MNIST tutorial network, Flatten -> 784 -> 128 -> 256 -> 10 with ReLU
// (widths from --hidden), optional dropout after each hidden layer. Names as nn.Sequential:
// "1.weight", "3.weight", ...
#include "nn/layers.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {
std::shared_ptr<Module> make_mlp(const ModelSpec& s) {
  const std::vector<int64_t> hidden = s.hidden.empty() ? std::vector<int64_t>{128, 256} : s.hidden;
  Generator gen(s.seed);
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Flatten>());
  int64_t in = s.height * s.width * s.channels;
  uint64_t dropout_seed = s.seed * 7919 + 1;
  for (int64_t h : hidden) {
    m->add(std::make_shared<Linear>(in, h, gen));
    m->add(std::make_shared<ReLU>());
    if (s.dropout > 0) m->add(std::make_shared<Dropout>(s.dropout, dropout_seed++));
    in = h;
  }
  m->add(std::make_shared<Linear>(in, s.num_classes, gen));
  return m;
}
}  // namespace

MLAI_REGISTER_MODEL("mlp", make_mlp);

}  // namespace mlai::nn
