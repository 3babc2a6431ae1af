// Activation checkpointing of modules (see activation_checkpointing.h and autograd/checkpoint.h).
#include "nn/activation_checkpointing.h"

#include <memory>
#include <utility>
#include <vector>

#include "autograd/checkpoint.h"
#include "nn/conv_layers.h"

namespace mlai::nn {

namespace {
void collect_batch_norms(Module& m, std::vector<BatchNorm2d*>& out) {
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) out.push_back(bn);
  for (auto& [n, c] : m.children()) collect_batch_norms(*c, out);
}

int mark_blocks(Module& m) {
  if (is_residual_block(m)) {
    m.set_checkpointed(true);
    return 1;
  }
  int n = 0;
  for (auto& [name, c] : m.children()) n += mark_blocks(*c);
  return n;
}
}  // namespace

bool is_residual_block(const Module& m) {
  const std::string t = m.type_name();
  return t == "BasicBlock" || t == "Bottleneck" || t == "WideBasic" || t == "InvertedResidual" ||
         t == "EncoderBlock";
}

int enable_activation_checkpointing(Module& model) { return mark_blocks(model); }

Variable Module::checkpointed_forward(const Variable& x) {
  // The recomputation must draw the dropout masks this forward draws: each generator's state
  // now, to return to before it, and the state after it, to return to after. Batch norm keeps
  // the statistics of this forward's batch once: it does not track them while recomputing.
  struct State {
    std::vector<Generator*> gens;
    std::vector<std::pair<uint64_t, uint64_t>> before, after;
    std::vector<BatchNorm2d*> bns;
    std::vector<bool> tracking;
  };
  auto s = std::make_shared<State>();
  for (auto& [n, g] : named_generators()) {
    s->gens.push_back(g);
    s->before.emplace_back(g->seed(), g->offset());
  }
  collect_batch_norms(*this, s->bns);
  autograd::RecomputeHooks hooks;
  hooks.before = [s] {
    s->after.clear();
    for (size_t i = 0; i < s->gens.size(); ++i) {
      s->after.emplace_back(s->gens[i]->seed(), s->gens[i]->offset());
      s->gens[i]->set_state(s->before[i].first, s->before[i].second);
    }
    s->tracking.clear();
    for (BatchNorm2d* bn : s->bns) {
      s->tracking.push_back(bn->track_running_stats());
      bn->set_track_running_stats(false);
    }
  };
  hooks.after = [s] {
    for (size_t i = 0; i < s->gens.size() && i < s->after.size(); ++i)
      s->gens[i]->set_state(s->after[i].first, s->after[i].second);
    for (size_t i = 0; i < s->bns.size() && i < s->tracking.size(); ++i)
      s->bns[i]->set_track_running_stats(s->tracking[i]);
  };
  return autograd::checkpoint([this](const Variable& in) { return forward(in); }, x,
                              std::move(hooks));
}

}  // namespace mlai::nn
