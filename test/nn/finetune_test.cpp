// Fine-tuning (nn/finetune.h): the optimizer's parameter groups behave as torch.optim's
// add_param_group (a fresh step count and state for the new group), --freeze-backbone leaves
// the backbone exactly as it was (with and without batch norm), and
// --unfreeze-backbone-at-epoch follows Lightning's BackboneFinetuning: frozen until the epoch,
// then its own rate (ratio, growth, cap at the head's), resumable across the unfreeze.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "nn/conv_layers.h"
#include "nn/experiment.h"
#include "nn/finetune.h"
#include "nn/layers.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

// Gradients drawn for step k (the same for every optimizer that replays them).
Tensor grad_for(const Shape& shape, uint64_t k) {
  Generator g(100 + k);
  return Tensor::uniform(shape, -1, 1, g);
}

// Steps `opt` once with the given gradients (undefined: the parameter has none this step).
void step_with(Optimizer& opt, std::vector<Variable>& ps, const std::vector<Tensor>& grads) {
  for (size_t i = 0; i < ps.size(); ++i) ps[i].set_grad(grads[i].defined() ? grads[i].clone() : Tensor());
  opt.step();
}

// Parameter "b" has no gradient for 3 steps, then joins its own group for 3 more: it must move
// as a fresh optimizer over "b" alone, started then with the group's rate, would move it, while
// "a" moves as an optimizer over "a" alone for all 6 steps. For SGD with momentum and
// dampening (the momentum buffer starts as the first gradient) and for Adam (bias correction
// from step 1).
TEST(OptimizerGroups, AddedGroupStepsAsAFreshOptimizerWould) {
  for (const std::string name : {"sgd", "adam", "adamw"}) {
    OptimizerConfig oc;
    oc.name = name;
    oc.lr = 0.1;
    oc.momentum = name == "sgd" ? 0.9 : 0.0;
    oc.dampening = name == "sgd" ? 0.3 : 0.0;
    oc.weight_decay = 0.01;
    Generator g(7);
    const Tensor a0 = Tensor::uniform({3, 4}, -1, 1, g), b0 = Tensor::uniform({5}, -1, 1, g);
    std::vector<Variable> both{Variable(a0.clone(), true), Variable(b0.clone(), true)};
    auto opt = make_optimizer({{"a", both[0]}, {"b", both[1]}}, oc);
    std::vector<Variable> alone_a{Variable(a0.clone(), true)};
    auto opt_a = make_optimizer({{"a", alone_a[0]}}, oc);
    std::vector<Variable> alone_b{Variable(b0.clone(), true)};
    OptimizerConfig ob = oc;
    ob.lr = 0.03;
    auto opt_b = make_optimizer({{"b", alone_b[0]}}, ob);
    for (uint64_t k = 0; k < 6; ++k) {
      const Tensor ga = grad_for({3, 4}, k), gb = grad_for({5}, 50 + k);
      if (k == 3) {
        EXPECT_EQ(opt->add_group({"b"}, 0.03), 1) << name;
      }
      step_with(*opt, both, {ga, k >= 3 ? gb : Tensor()});
      step_with(*opt_a, alone_a, {ga});
      if (k >= 3) step_with(*opt_b, alone_b, {gb});
      if (k < 3) {
        EXPECT_EQ(both[1].data().to_vector<float>(), b0.to_vector<float>()) << name;
      }
    }
    EXPECT_EQ(both[0].data().to_vector<float>(), alone_a[0].data().to_vector<float>()) << name;
    EXPECT_EQ(both[1].data().to_vector<float>(), alone_b[0].data().to_vector<float>()) << name;
    EXPECT_EQ(opt->group_count(), 2);
    EXPECT_EQ(opt->group_start(1), 3);
    EXPECT_EQ(opt->group_names(1), std::vector<std::string>{"b"});
    EXPECT_EQ(opt->group_names(0), std::vector<std::string>{"a"});
  }
}

TEST(OptimizerGroups, BadGroupsAreRefused) {
  OptimizerConfig oc;
  Variable a(Tensor::zeros({2}), true), b(Tensor::zeros({2}), true);
  auto opt = make_optimizer({{"a", a}, {"b", b}}, oc);
  EXPECT_THROW(opt->add_group({"c"}, 0.1), std::invalid_argument);
  EXPECT_THROW(opt->add_group({}, 0.1), std::invalid_argument);
  EXPECT_THROW(opt->add_group({"a"}, -1.0), std::invalid_argument);
  opt->add_group({"a"}, 0.1);
  EXPECT_THROW(opt->add_group({"a"}, 0.1), std::invalid_argument);  // in group 1 already
  opt->set_group_lr(1, 0.5);
  EXPECT_EQ(opt->group_lr(1), 0.5);
  EXPECT_EQ(opt->group_lr(0), oc.lr);
}

TEST(Finetune, HeadAndBackboneOfTheModels) {
  ModelSpec s;
  auto r = make_model("resnet18_cifar", s);
  EXPECT_EQ(head_prefix(*r), "fc");
  EXPECT_EQ(head_parameter_names(*r), (std::vector<std::string>{"fc.weight", "fc.bias"}));
  auto m = make_model("mlp", s);
  const auto names = m->named_parameters();
  const std::string last = names.back().first;
  const std::string head = last.substr(0, last.rfind('.'));
  EXPECT_EQ(head_prefix(*m), head);
  ASSERT_EQ(head_parameter_names(*m).size(), 2u);
  // Frozen: every parameter but the head's (and batch norm's with train_bn).
  const auto frozen = freeze_backbone(*r, true);
  // fc, and the weight and bias of batch norm's 4800 channels.
  EXPECT_EQ(trainable_parameter_count(*r), 512 * 10 + 10 + 2 * 4800);
  for (const auto& n : frozen) EXPECT_EQ(n.find("bn"), std::string::npos) << n;
  make_trainable(*r, frozen);
  EXPECT_EQ(trainable_parameter_count(*r), r->parameter_count());
  freeze_backbone(*r, false);
  EXPECT_EQ(trainable_parameter_count(*r), 512 * 10 + 10);
  for (BatchNorm2d* bn : batch_norms(*r)) EXPECT_FALSE(bn->track_running_stats());
  const std::string summary = model_summary(*r);
  EXPECT_NE(summary.find("5.1 K     Trainable params"), std::string::npos) << summary;
  EXPECT_NE(summary.find("11.2 M    Non-trainable params"), std::string::npos) << summary;
}

// Batch norm not tracking (--freeze-bn): training normalises with the batch's statistics and
// leaves the running ones exactly as they were, even when a batch holds an infinity (an fp16
// overflow), and update_bn's reset leaves them too; evaluation uses them.
TEST(Finetune, UntrackedBatchNormKeepsItsRunningStatistics) {
  BatchNorm2d bn(3);
  Generator g(3);
  const Tensor x = Tensor::uniform({4, 2, 2, 3}, -1, 1, g);
  bn.train();
  bn(Variable(x));  // tracked: the statistics move
  const auto named = bn.named_buffers();
  auto snapshot = [&] {
    std::vector<std::vector<double>> out;
    for (const auto& [n, t] : named) out.push_back(t->to_double_vector());
    return out;
  };
  const auto before = snapshot();
  bn.set_track_running_stats(false);
  std::vector<float> bad = x.to_vector<float>();
  bad[0] = std::numeric_limits<float>::infinity();
  bn(Variable(Tensor::from_vector(bad, x.shape())));
  const Variable y = bn(Variable(x));
  bn.reset_running_stats();
  EXPECT_EQ(snapshot(), before);
  // Training output: normalised with the batch's own statistics (mean 0 per channel).
  const auto out = y.data().to_vector<float>();
  for (int c = 0; c < 3; ++c) {
    double mean = 0;
    for (size_t i = static_cast<size_t>(c); i < out.size(); i += 3) mean += out[i];
    EXPECT_NEAR(mean / 16, 0.0, 1e-5);
  }
}

TEST(Finetune, BackboneRateFollowsBackboneFinetuning) {
  // unfreeze at 2, ratio 0.1, growth 1.5 (Lightning's defaults), head at 0.01.
  EXPECT_EQ(backbone_lr(1, 2, 0, 0.01, 0.1, 1.5), -1.0);
  EXPECT_DOUBLE_EQ(backbone_lr(2, 2, 0, 0.01, 0.1, 1.5), 0.001);
  EXPECT_DOUBLE_EQ(backbone_lr(3, 2, 0.001, 0.01, 0.1, 1.5), 0.0015);
  EXPECT_DOUBLE_EQ(backbone_lr(9, 2, 0.008, 0.01, 0.1, 1.5), 0.01);  // 0.012 > the head's
}

class FinetuneTrainer : public TrainerTest {
 protected:
  // ResNet-18 (small-image stem) for a few steps of SGD: enough to move every trained tensor.
  Config tiny_resnet() const {
    Config c = base();
    c.arch = "resnet18_cifar";
    c.epochs = 1;
    c.batch_size = 8;
    c.limit_train_batches = "3";
    c.limit_val_batches = "1";
    c.limit_test_batches = "1";
    c.optimizer = "sgd";
    c.lr = 0.1;
    return c;
  }
  static std::vector<std::pair<std::string, std::vector<float>>> named_values(Module& m) {
    std::vector<std::pair<std::string, std::vector<float>>> out;
    for (auto& [n, t] : m.named_tensors())
      out.emplace_back(n, t->dtype() == DType::kInt64 ? std::vector<float>{float(t->item())}
                                                      : t->to_vector<float>());
    return out;
  }
  // Each tensor of `after` compared with `before`: `same(name)` says which must be unchanged,
  // the others must have changed.
  static void expect_changed(const std::vector<std::pair<std::string, std::vector<float>>>& before,
                             const std::vector<std::pair<std::string, std::vector<float>>>& after,
                             const std::function<bool(const std::string&)>& same) {
    ASSERT_EQ(before.size(), after.size());
    for (size_t i = 0; i < before.size(); ++i) {
      if (same(before[i].first)) {
        EXPECT_EQ(before[i].second, after[i].second) << before[i].first << " changed";
      } else {
        EXPECT_NE(before[i].second, after[i].second) << before[i].first << " did not change";
      }
    }
  }
};

TEST_F(FinetuneTrainer, FrozenMlpBackboneStaysExactlyAsItWas) {
  Config c = base();
  c.freeze_backbone = true;
  c.optimizer = "adamw";
  c.weight_decay = 0.1;  // (decay would move a frozen weight the optimizer wrongly stepped)
  Trainer t(c);
  const auto before = named_values(t.model());
  const std::string head = head_prefix(t.model());
  const FitResult r = t.fit();
  expect_changed(before, named_values(t.model()),
                 [&](const std::string& n) { return n.rfind(head + ".", 0) != 0; });
  EXPECT_GT(r.test.confusion.accuracy(), 0.3);  // a linear probe on random features learns
}

// ResNet: with train_bn (the default) batch norm trains and tracks its statistics while the
// convolutions stay; with --freeze-bn nothing but fc changes, num_batches_tracked included.
TEST_F(FinetuneTrainer, FrozenResNetBackboneWithAndWithoutBatchNorm) {
  for (const bool freeze_bn : {false, true}) {
    Config c = tiny_resnet();
    c.freeze_backbone = true;
    c.freeze_bn = freeze_bn;
    Trainer t(c);
    const auto before = named_values(t.model());
    t.fit();
    expect_changed(before, named_values(t.model()), [&](const std::string& n) {
      if (n.rfind("fc.", 0) == 0) return false;
      const bool bn = n.find("bn") != std::string::npos || n.find("downsample.1") != std::string::npos;
      return !bn || freeze_bn;
    });
  }
}

// --freeze conv1,bn1,layer1 --freeze-bn: exactly those modules stay as they were (statistics
// included); everything after them trains. Unknown modules and freezing everything are errors.
TEST_F(FinetuneTrainer, FreezeNamedModulesOnly) {
  Config c = tiny_resnet();
  c.freeze = "conv1,bn1,layer1";
  c.freeze_bn = true;
  Trainer t(c);
  const auto before = named_values(t.model());
  t.fit();
  expect_changed(before, named_values(t.model()), [](const std::string& n) {
    return n.rfind("conv1.", 0) == 0 || n.rfind("bn1.", 0) == 0 || n.rfind("layer1.", 0) == 0;
  });
  Config unknown = c;
  unknown.freeze = "layer9";
  EXPECT_THROW(Trainer{unknown}, std::invalid_argument);
  Config all = c;
  all.freeze = "conv1,bn1,layer1,layer2,layer3,layer4,fc";
  EXPECT_THROW(Trainer{all}, std::invalid_argument);
  Config both = c;
  both.freeze_backbone = true;
  EXPECT_THROW(both.validate(), std::invalid_argument);
}

// BackboneFinetuning on the MLP: frozen through epoch 0, then at ratio 0.2 of the head's 0.05
// (constant), tripling each epoch but capped at 0.05: 0.01, 0.03, 0.05.
TEST_F(FinetuneTrainer, UnfreezeAtEpochFollowsTheBackboneRates) {
  Config c = base();
  c.epochs = 4;
  c.optimizer = "sgd";
  c.lr = 0.05;
  c.lr_schedule = "constant";
  c.unfreeze_backbone_at_epoch = 1;
  c.backbone_lr_ratio = 0.2;
  c.backbone_lr_growth = 3;
  Trainer t(c);
  const auto initial = named_values(t.model());
  const std::string head = head_prefix(t.model());
  const FitResult r = t.fit();
  const auto rates = scalar_values(r.version_dir, "lr_backbone");
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_FLOAT_EQ(rates[0], 0.01f);
  EXPECT_FLOAT_EQ(rates[1], 0.03f);
  EXPECT_FLOAT_EQ(rates[2], 0.05f);
  expect_changed(initial, named_values(t.model()), [](const std::string&) { return false; });

  // The first epoch alone leaves the backbone as it was.
  Config one = c;
  one.epochs = 4;
  one.max_steps = r.global_step / 4;
  one.experiment_name = "first-epoch";
  Trainer t1(one);
  t1.fit();
  expect_changed(initial, named_values(t1.model()),
                 [&](const std::string& n) { return n.rfind(head + ".", 0) != 0; });
}

// Resumed before the unfreeze (mid-epoch 0), at it (the end of epoch 0) and after it (mid-epoch
// 2, the group in the checkpoint): each ends with a straight run's weights, with Adam (whose
// per-group step count the checkpoint must keep).
TEST_F(FinetuneTrainer, ResumesExactlyAcrossTheUnfreeze) {
  Config c = four_epochs_sgd(0.01, 0.5);  // (a schedule the same however a run is split)
  c.optimizer = "adam";
  c.unfreeze_backbone_at_epoch = 1;
  Trainer straight(c);
  const int64_t per_epoch = straight.fit().global_step / c.epochs;
  const auto want = weights(straight);
  for (const int64_t stop : {per_epoch / 2, per_epoch, 2 * per_epoch + 5}) {
    const auto got = split_run_weights(c, [&](Config& f) { f.max_steps = stop; });
    EXPECT_EQ(got, want) << "resumed after step " << stop;
  }
}

// --pretrained with --reset-head: the backbone comes from the file, the head (the mlp's last
// layer) keeps its fresh initialisation; without it, everything comes from the file.
TEST_F(FinetuneTrainer, ResetHeadLoadsTheBackboneAndKeepsAFreshHead) {
  Config c = base();
  c.epochs = 1;
  const FitResult trained = Trainer(c).fit();
  Config fresh_cfg = c;
  fresh_cfg.seed = 5;
  Trainer fresh(fresh_cfg);
  const auto init = named_values(fresh.model());
  const std::string head = head_prefix(fresh.model());
  Config pre = fresh_cfg;
  pre.pretrained = trained.version_dir + "/checkpoints/last.h5";
  Trainer all(pre);
  pre.reset_head = true;
  Trainer reset(pre);
  const auto loaded = named_values(all.model()), kept = named_values(reset.model());
  for (size_t i = 0; i < init.size(); ++i) {
    const bool in_head = init[i].first.rfind(head + ".", 0) == 0;
    EXPECT_NE(loaded[i].second, init[i].second) << init[i].first;
    EXPECT_EQ(kept[i].second, in_head ? init[i].second : loaded[i].second) << init[i].first;
  }
}

TEST(FinetuneConfig, BadCombinationsAreRefused) {
  Config c;
  c.freeze_bn = true;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.freeze_backbone = true;
  EXPECT_NO_THROW(c.validate());
  c = Config();
  c.unfreeze_backbone_at_epoch = -2;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.unfreeze_backbone_at_epoch = 3;
  c.backbone_lr_ratio = 0;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.backbone_lr_ratio = 0.1;
  c.cuda_graphs = true;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c.cuda_graphs = false;
  c.swa_lrs = 0.01;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
