// Gradient checks (float64, CPU, finite differences) for the ResNet ops: convolution with and
// without bias at several strides and paddings, max pooling, global average pooling, and batch
// normalisation in training and evaluation mode, plain and fused with the residual add + relu.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/ops.h"

namespace mlai::autograd {
namespace {

class ConvGradcheck : public ::testing::Test {
 protected:
  tensor::Generator gen{11};
  Tensor rand(const Shape& s) { return Tensor::uniform(s, -1.0, 1.0, gen, DType::kFloat64); }
  void expect_ok(const GradcheckFn& f, const std::vector<Tensor>& in) {
    const GradcheckResult r = gradcheck(f, in);
    EXPECT_TRUE(r.ok) << r.message;
  }
};

TEST_F(ConvGradcheck, Conv2dGeometries) {
  struct G {
    int64_t n, h, w, cin, cout, k, stride, pad;
  };
  for (const G& g :
       {G{2, 5, 4, 3, 2, 3, 1, 1}, G{1, 6, 7, 2, 3, 3, 2, 1}, G{2, 4, 4, 3, 4, 1, 2, 0},
        G{1, 7, 7, 1, 2, 7, 2, 3}, G{2, 3, 3, 2, 2, 1, 1, 0}}) {
    const Tensor x = rand({g.n, g.h, g.w, g.cin}), w = rand({g.cout, g.k, g.k, g.cin});
    expect_ok([&](auto& v) { return conv2d(v[0], v[1], Variable(), g.stride, g.pad); }, {x, w});
    expect_ok([&](auto& v) { return conv2d(v[0], v[1], v[2], g.stride, g.pad); },
              {x, w, rand({g.cout})});
  }
}

// Grouped (ResNeXt's) and depthwise (MobileNet's) convolutions in float64: the grouped GEMMs,
// the depthwise kernel at strides 1 and 2, a 5x5 depthwise filter, and a channel multiplier.
TEST_F(ConvGradcheck, GroupedAndDepthwiseConv2d) {
  struct G {
    int64_t n, h, w, cin, cout, k, stride, pad, groups;
  };
  for (const G& g :
       {G{2, 5, 4, 4, 6, 3, 1, 1, 2}, G{1, 6, 7, 6, 3, 1, 1, 0, 3}, G{2, 5, 5, 3, 3, 3, 1, 1, 3},
        G{1, 7, 6, 4, 4, 3, 2, 1, 4}, G{1, 8, 8, 2, 2, 5, 2, 2, 2}, G{1, 5, 5, 2, 4, 3, 1, 1, 2}}) {
    SCOPED_TRACE(std::to_string(g.cin) + "->" + std::to_string(g.cout) + " in " +
                 std::to_string(g.groups) + " groups, k" + std::to_string(g.k) + " s" +
                 std::to_string(g.stride));
    const Tensor x = rand({g.n, g.h, g.w, g.cin}), w = rand({g.cout, g.k, g.k, g.cin / g.groups});
    expect_ok([&](auto& v) { return conv2d(v[0], v[1], Variable(), g.stride, g.pad, g.groups); },
              {x, w});
    expect_ok([&](auto& v) { return conv2d(v[0], v[1], v[2], g.stride, g.pad, g.groups); },
              {x, w, rand({g.cout})});
  }
}

TEST_F(ConvGradcheck, MaxPoolAndGlobalAvgPool) {
  // Distinct values, so no two window entries tie (the max is then differentiable).
  Tensor x = Tensor::empty({2, 7, 6, 3}, DType::kFloat64);
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::sin(static_cast<double>(i) * 1.37) * 3.0;
  expect_ok([](auto& v) { return maxpool2d(v[0], 3, 2, 1); }, {x});
  expect_ok([](auto& v) { return global_avgpool(v[0]); }, {rand({3, 4, 5, 2})});
}

TEST_F(ConvGradcheck, BatchNormTrainingAndEvaluation) {
  for (bool training : {true, false}) {
    Tensor rm = rand({3}), rv = tensor::add(rand({3}), Tensor::full({3}, 2.0, DType::kFloat64));
    const Tensor rm0 = rm.clone(), rv0 = rv.clone();
    expect_ok(
        [&](auto& v) {
          // Fresh copies each call: training updates the running statistics in place.
          Tensor m = rm0.clone(), s = rv0.clone();
          return batchnorm(v[0], v[1], v[2], m, s, training, 0.1, 1e-5);
        },
        {rand({2, 3, 4, 3}), tensor::add(rand({3}), Tensor::full({3}, 1.5, DType::kFloat64)),
         rand({3})});
  }
}

// act(bn(x) + z) in one op (act none, relu or relu6), every combination, training and
// evaluation. Inputs are redrawn until no pre-activation is within 1e-3 of a kink (0; and 6 for
// relu6, where some must pass 6: gamma is drawn larger) (finite differences move them by about
// eps = 1e-6, so the mask cannot flip).
TEST_F(ConvGradcheck, FusedBatchNormResidualActivation) {
  using kernels::BnAct;
  const Shape shape{2, 3, 2, 4};
  for (bool training : {true, false})
    for (bool residual : {false, true})
      for (BnAct act : {BnAct(BnAct::kNone), BnAct(BnAct::kRelu), BnAct(BnAct::kRelu6)}) {
        const bool capped = act.kind == BnAct::kRelu6;
        SCOPED_TRACE(std::string(training ? "train" : "eval") + (residual ? " +z" : "") +
                     (act ? (capped ? " relu6" : " relu") : ""));
        const Tensor rm0 = rand({4}),
                     rv0 = tensor::add(rand({4}), Tensor::full({4}, 2.0, DType::kFloat64));
        auto f = [&](const std::vector<Variable>& v) {
          Tensor m = rm0.clone(), s = rv0.clone();  // training updates them in place
          return batchnorm_act(v[0], v[1], v[2], residual ? v[3] : Variable(), act, m, s, training,
                               0.1, 1e-5);
        };
        std::vector<Tensor> in;
        bool far = false;
        for (int attempt = 0; attempt < 200 && !far; ++attempt) {
          in = {rand(shape),
                tensor::add(rand({4}), Tensor::full({4}, capped ? 4.5 : 1.5, DType::kFloat64)),
                rand({4})};
          if (residual) in.push_back(rand(shape));
          // The pre-activation: the same op without the activation.
          Tensor m = rm0.clone(), s = rv0.clone();
          NoGradGuard no_grad;
          const Tensor pre = batchnorm_act(Variable(in[0]), Variable(in[1]), Variable(in[2]),
                                           residual ? Variable(in[3]) : Variable(), false, m, s,
                                           training, 0.1, 1e-5)
                                 .data();
          const auto v = pre.to_double_vector();
          far = !act || std::all_of(v.begin(), v.end(), [&](double e) {
            return std::abs(e) > 1e-3 && (!capped || std::abs(e - 6) > 1e-3);
          });
          if (capped) far = far && std::any_of(v.begin(), v.end(), [](double e) { return e > 6; });
        }
        ASSERT_TRUE(far) << "could not draw inputs away from the activation's kinks";
        expect_ok(f, in);
      }
}

}  // namespace
}  // namespace mlai::autograd
