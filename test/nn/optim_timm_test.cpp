// --optimizer lars and lamb against timm's own Lars and Lamb (test/nn/timm_optim_reference.py):
// the same parameters, gradients and rates, six steps, with and without --no-bias-decay and
// trust clipping. Skips where python3 lacks torch or timm (set MLAI_TORCH_PYTHON to one that
// has them).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/optim.h"

namespace mlai::nn {
namespace {

struct Case {
  std::string optimizer;
  bool no_bias_decay = false, trust_clip = false, nesterov = false;
};

TEST(OptimTimm, LarsAndLambMatchTimm) {
  char tmpl[] = "/tmp/mlai_timm_optim_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  struct Remove {
    std::filesystem::path p;
    ~Remove() { std::filesystem::remove_all(p); }
  } dir{tmpl};
  const char* py = std::getenv("MLAI_TORCH_PYTHON");
  int compared = 0;
  for (const Case& c : {Case{"lars"}, Case{"lars", true, false, true}, Case{"lars", false, true},
                        Case{"lamb"}, Case{"lamb", true}, Case{"lamb", false, true}}) {
    SCOPED_TRACE(c.optimizer + (c.no_bias_decay ? " no-bias-decay" : "") +
                 (c.trust_clip ? " trust-clip" : "") + (c.nesterov ? " nesterov" : ""));
    // A conv filter, a matrix and a bias, as a model's named parameters.
    const std::vector<std::pair<std::string, Shape>> shapes = {
        {"conv.weight", {4, 3, 3, 3}}, {"fc.weight", {10, 36}}, {"fc.bias", {10}}};
    Generator gen(11);
    std::vector<std::pair<std::string, Variable>> named;
    nlohmann::json j;
    for (const auto& [n, s] : shapes) {
      Tensor w = Tensor::uniform(s, -0.5, 0.5, gen);
      named.push_back({n, Variable(w, true)});
      j["params"][n] = {{"shape", s}, {"data", w.to_vector<float>()}};
    }
    OptimizerConfig oc;
    oc.name = c.optimizer;
    oc.momentum = c.optimizer == "lars" ? 0.9 : 0.0;
    oc.nesterov = c.nesterov;
    oc.weight_decay = c.optimizer == "lars" ? 5e-4 : 0.01;
    oc.eps = c.optimizer == "lars" ? 1e-8 : 1e-6;
    oc.trust_coefficient = 0.02;
    oc.trust_clip = c.trust_clip;
    oc.no_bias_decay = c.no_bias_decay;
    auto opt = make_optimizer(named, oc);
    const int steps = 6;
    for (int s = 0; s < steps; ++s) {
      const double lr = (c.optimizer == "lars" ? 2.0 : 0.01) / (1 + s);  // a decaying rate
      opt->set_lr(lr);
      j["lr"].push_back(lr);
      nlohmann::json gj;
      for (auto& [n, v] : named) {
        Tensor g = Tensor::uniform(v.shape(), -1, 1, gen);
        v.set_grad(g);
        gj[n] = g.to_vector<float>();
      }
      j["grads"].push_back(gj);
      opt->step();
    }
    j["optimizer"] = c.optimizer;
    j["momentum"] = oc.momentum;
    j["nesterov"] = oc.nesterov;
    j["weight_decay"] = oc.weight_decay;
    j["eps"] = oc.eps;
    j["beta1"] = oc.beta1;
    j["beta2"] = oc.beta2;
    j["trust_coefficient"] = oc.trust_coefficient;
    j["trust_clip"] = oc.trust_clip;
    j["no_bias_decay"] = oc.no_bias_decay;
    std::ofstream(dir.p / "case.json") << j.dump();
    const std::string cmd = std::string(py ? py : "python3") + " '" + MLAI_SOURCE_DIR +
                            "/test/nn/timm_optim_reference.py' '" + dir.p.string() + "' 2>&1";
    const int status = std::system(cmd.c_str());
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
      GTEST_SKIP() << "torch/timm are not installed for python3 (set MLAI_TORCH_PYTHON to a "
                      "python that has them)";
    ASSERT_EQ(status, 0) << cmd;
    nlohmann::json r;
    std::ifstream(dir.p / "result.json") >> r;
    for (auto& [n, v] : named) {
      const std::vector<float> got = v.data().to_vector<float>();
      const std::vector<float> want = r.at(n).get<std::vector<float>>();
      const std::vector<float> start = j["params"][n]["data"].get<std::vector<float>>();
      ASSERT_EQ(got.size(), want.size()) << n;
      double err = 0, moved = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
        moved = std::max(moved, std::abs(static_cast<double>(want[i]) - start[i]));
      }
      // Float32 both ways; norms summed in another order: a few ulps of the weights (<= 0.5).
      EXPECT_LT(err, 2e-6) << n << " moved " << moved;
      EXPECT_GT(moved, 1e-3) << n << ": the steps did not move it";
      ++compared;
    }
  }
  EXPECT_EQ(compared, 18);
}

}  // namespace
}  // namespace mlai::nn
