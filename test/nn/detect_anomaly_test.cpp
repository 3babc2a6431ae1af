// --detect-anomaly on modules and the trainer: the first module whose output is inf/nan from a
// finite input is named by its summary name (fused Linear + ReLU pairs too), not the ones after
// it; a run whose learning rate blows the weights up stops at the step where it happened,
// naming it, where without the flag it trains on into nan; --cuda-graphs cannot be combined.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "autograd/anomaly.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

using tensor::DType;

std::string anomaly_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const autograd::AnomalyError& e) {
    return e.what();
  }
  return "";
}

TEST(DetectAnomaly, NamesTheFirstModuleToMakeNan) {
  tensor::Generator gen(5);
  Sequential net;
  net.add(std::make_shared<Linear>(4, 8, gen));
  net.add(std::make_shared<ReLU>());
  net.add(std::make_shared<Linear>(8, 3, gen));
  net.add(std::make_shared<Linear>(3, 2, gen));
  net.label_for_trace();
  const Variable x(tensor::Tensor::full({2, 4}, 0.5, DType::kFloat32));
  // The third layer's weights hold a nan: it, not the fourth, is named.
  auto params = net.named_parameters();
  for (auto& [name, v] : params)
    if (name == "2.weight") {
      std::vector<float> w = v.data().to_vector<float>();
      w[1] = std::nanf("");
      v.data().copy_from(tensor::Tensor::from_vector(w, v.data().shape()));
    }
  EXPECT_TRUE(anomaly_of([&] { net(x); }).empty()) << "off: nothing is checked";
  autograd::set_detect_anomaly(true, true);
  std::string e = anomaly_of([&] { net(x); });
  EXPECT_NE(e.find("2 (Linear)"), std::string::npos) << e;
  EXPECT_EQ(e.find("3 (Linear)"), std::string::npos) << e;
  // A fused Linear + ReLU pair is named as the trace names it.
  for (auto& [name, v] : params)
    if (name == "0.weight") {
      std::vector<float> w = v.data().to_vector<float>();
      w[0] = std::numeric_limits<float>::infinity();
      v.data().copy_from(tensor::Tensor::from_vector(w, v.data().shape()));
    }
  e = anomaly_of([&] { net(x); });
  EXPECT_NE(e.find("0 + 1 (Linear + ReLU)"), std::string::npos) << e;
  autograd::set_detect_anomaly(false, false);
}

TEST_F(TrainerTest, DetectAnomalyStopsAtTheStepThatMadeNan) {
  Config c = base();
  c.epochs = 1;
  c.optimizer = "sgd";
  c.lr = 1e30;  // the first step throws the weights far beyond float's range
  c.experiment_name = "plain";
  const FitResult plain = Trainer(c).fit();
  EXPECT_FALSE(std::isfinite(plain.last_train_loss)) << "without the flag it trains into nan";
  c.detect_anomaly = true;
  c.experiment_name = "detect";
  const std::string e = anomaly_of([&] { Trainer(c).fit(); });
  EXPECT_NE(e.find("--detect-anomaly at step 1 (epoch 1, batch 1)"), std::string::npos) << e;
  EXPECT_NE(e.find("produced inf/nan"), std::string::npos) << e;
  EXPECT_FALSE(autograd::anomaly_forward()) << "the trainer turns it off when it ends";

  Config graphs = base();
  graphs.detect_anomaly = true;
  graphs.cuda_graphs = true;
  EXPECT_THROW(graphs.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::nn
