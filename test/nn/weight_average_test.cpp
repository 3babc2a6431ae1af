// --ema-decay: the weight average itself (updates, swaps, integer buffers) and the trainer's use
// of it as Lightning's WeightAveraging does: validation with the average, checkpoints holding
// the average as their weights and the training weights beside them, exact resume, the test
// with the average.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/conv_layers.h"
#include "nn/layers.h"
#include "nn/weight_average.h"
#include "tensor/ops.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

// A Linear layer and a batch norm (float running statistics and an int64 counter).
std::shared_ptr<Sequential> small_model(uint64_t seed) {
  Generator g(seed);
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(5, 3, g));
  m->add(std::make_shared<BatchNorm2d>(4));
  return m;
}
std::vector<std::vector<double>> values(Module& m) {
  std::vector<std::vector<double>> out;
  for (auto& [n, v] : m.named_parameters()) out.push_back(v.data().to_double_vector());
  for (auto& [n, b] : m.named_buffers()) out.push_back(b->to_double_vector());
  return out;
}
// Moves every tensor of m to new random values (as training would), counters by k.
void perturb(Module& m, uint64_t seed, int64_t k) {
  Generator g(seed);
  for (auto& [n, v] : m.named_parameters())
    const_cast<Variable&>(v).data().copy_from(Tensor::uniform(v.data().shape(), -1, 1, g));
  for (auto& [n, b] : m.named_buffers()) {
    if (b->dtype() == DType::kInt64)
      b->copy_from(Tensor::full(b->shape(), static_cast<double>(k), DType::kInt64));
    else
      b->copy_from(Tensor::uniform(b->shape(), 0.5, 2, g));
  }
}

TEST(WeightAverage, FirstUpdateCopiesThenAveragesFloatsAndCopiesCounters) {
  auto model = small_model(1);
  const double d = 0.75;
  WeightAverage avg(*model, d);
  perturb(*model, 2, 1);
  avg.update(*model);  // the first update copies (AveragedModel with n_averaged 0)
  const auto first = values(*model);
  perturb(*model, 3, 7);
  const auto second = values(*model);
  avg.update(*model);
  EXPECT_EQ(avg.updates(), 2);
  auto named = avg.named();
  ASSERT_EQ(named.size(), first.size());
  for (size_t t = 0; t < named.size(); ++t) {
    const auto got = named[t].second->to_double_vector();
    for (size_t i = 0; i < got.size(); ++i) {
      if (named[t].second->dtype() == DType::kInt64) {
        EXPECT_EQ(got[i], 7) << named[t].first;  // counters are copied, not averaged
      } else {
        const double want = d * first[t][i] + (1 - d) * second[t][i];
        EXPECT_NEAR(got[i], want, 1e-6) << named[t].first << " " << i;
      }
    }
  }
  EXPECT_EQ(named[0].first, "0.weight");
  EXPECT_THROW(WeightAverage(*model, 1.0), std::invalid_argument);
  EXPECT_THROW(WeightAverage(*model, 0.0), std::invalid_argument);
}

TEST(WeightAverage, SwapExchangesInPlaceAndTwiceIsTheIdentity) {
  auto model = small_model(4);
  WeightAverage avg(*model, 0.5);
  perturb(*model, 5, 3);
  const auto trained = values(*model);
  std::vector<std::vector<double>> averaged;
  for (auto& [n, t] : avg.named()) averaged.push_back(t->to_double_vector());
  const void* storage = model->named_parameters()[0].second.data().data_ptr();
  avg.swap(*model);
  EXPECT_EQ(values(*model), averaged);
  EXPECT_EQ(model->named_parameters()[0].second.data().data_ptr(), storage);  // in place
  avg.swap(*model);
  EXPECT_EQ(values(*model), trained);
  avg.copy_to(*model);
  EXPECT_EQ(values(*model), averaged);
}

// A decay so small that the average is the weights (1 - 1e-12 rounds to 1 in float): the run
// validates and tests exactly as one without averaging, so the swaps and copies change nothing
// they should not. A decay of 0.9 validates something else, and the same training.
TEST_F(TrainerTest, WeightAverageOfDecayNearZeroChangesNothing) {
  Config c = base();
  c.optimizer = "sgd";
  c.lr = 0.05;
  const FitResult plain = Trainer(c).fit();
  Config e = c;
  e.ema_decay = 1e-12;
  e.experiment_name = "ema0";
  const FitResult near0 = Trainer(e).fit();
  EXPECT_EQ(near0.val.loss, plain.val.loss);
  EXPECT_EQ(near0.test.loss, plain.test.loss);
  EXPECT_EQ(near0.last_train_loss, plain.last_train_loss);
  Config f = c;
  f.ema_decay = 0.9;
  f.experiment_name = "ema9";
  const FitResult r9 = Trainer(f).fit();
  EXPECT_EQ(r9.last_train_loss, plain.last_train_loss);  // training itself is untouched
  EXPECT_NE(r9.val.loss, plain.val.loss);
  EXPECT_NE(r9.test.loss, plain.test.loss);
}

// Checkpoints hold the average as "model" and the training weights as "current_model"; the
// model after fit() is the average; a run split in two ends exactly as one straight run
// (weights, validation and test); resumed without --ema-decay, training goes on from the
// training weights.
TEST_F(TrainerTest, WeightAverageIsValidatedCheckpointedAndResumedExactly) {
  Config c = base();
  c.epochs = 4;
  c.optimizer = "adamw";
  c.lr_schedule = "step";
  c.lr_step_epochs = 1;
  c.lr_gamma = 0.5;
  c.ema_decay = 0.8;
  c.ema_start_step = 5;
  Trainer straight(c);
  const FitResult r = straight.fit();
  const std::string last = r.version_dir + "/checkpoints/last.h5";
  {
    io::H5Reader h5(last);
    EXPECT_TRUE(h5.has("current_model/1.weight"));  // mlp: 0 is the Flatten
  }
  Trainer probe(c);
  const TrainState st = load_checkpoint(last, probe.model(), nullptr);
  EXPECT_EQ(st.ema_updates, r.global_step - 5);
  // The final model (after fit) is the average: last.h5's "model".
  std::vector<std::vector<float>> file_avg;
  for (auto& [n, v] : probe.model().named_parameters()) file_avg.push_back(v.data().to_vector<float>());
  EXPECT_EQ(weights(straight), file_avg);
  // "current_model" differs from the average.
  ASSERT_TRUE(load_current_model(last, probe.model()));
  std::vector<std::vector<float>> file_cur;
  for (auto& [n, v] : probe.model().named_parameters()) file_cur.push_back(v.data().to_vector<float>());
  EXPECT_NE(file_cur, file_avg);

  Config first = c;
  first.epochs = 2;
  first.experiment_name = "split";
  const FitResult r1 = Trainer(first).fit();
  Config second = c;
  second.experiment_name = "split";
  second.resume = r1.version_dir + "/checkpoints/last.h5";
  Trainer resumed(second);
  const FitResult r2 = resumed.fit();
  EXPECT_EQ(weights(straight), weights(resumed));
  EXPECT_EQ(r2.test.loss, r.test.loss);
  EXPECT_EQ(r2.val.loss, r.val.loss);

  // Resumed without --ema-decay, training goes on from the training weights, not the average.
  Config plain = first;
  plain.ema_decay = 0;
  plain.epochs = 2;
  plain.experiment_name = "split";
  plain.resume = r1.version_dir + "/checkpoints/last.h5";
  Trainer no_avg(plain);
  Trainer probe2(first);
  load_checkpoint(plain.resume, probe2.model(), nullptr);
  ASSERT_TRUE(load_current_model(plain.resume, probe2.model()));
  EXPECT_EQ(weights(no_avg), weights(probe2));

  Config bad = c;
  bad.ema_decay = 1.0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad.ema_decay = -0.5;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
