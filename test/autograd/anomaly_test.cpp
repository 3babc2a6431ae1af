// --detect-anomaly: the engine names the first backward op whose gradient holds inf/nan though
// the one it was given did not (not those after it), and the seed; off, nothing is checked.
// Modules name the first one whose output is inf/nan from finite input (test/nn).
#include "autograd/anomaly.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "autograd/variable.h"

namespace mlai::autograd {
namespace {

using tensor::DType;
using tensor::Tensor;

struct AnomalyScope {
  AnomalyScope() { set_detect_anomaly(true, true); }
  ~AnomalyScope() { set_detect_anomaly(false, false); }
};

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const AnomalyError& e) {
    return e.what();
  }
  return "";
}

TEST(Anomaly, NamesTheFirstBackwardOpToMakeInf) {
  // sum(x * w) with x = 1e-10 and w = 3e38 is finite (3e28 each); its backward seeded with 10
  // gives MulBackward 10 x 3e38 = inf for x, from a finite gradient.
  Variable x(Tensor::full({4}, 1e-10, DType::kFloat32), true);
  Variable w(Tensor::full({4}, 3e38, DType::kFloat32), true);
  const Tensor seed = Tensor::full({}, 10.0, DType::kFloat32);
  EXPECT_TRUE(all_finite(sum(mul(x, w)).data()));
  {
    Variable y = sum(mul(x, w));
    y.backward(seed);  // off: nothing checked, the inf lands in x's gradient
    EXPECT_FALSE(all_finite(x.grad()));
  }
  AnomalyScope on;
  Variable y = sum(mul(x, w));
  const std::string e = error_of([&] { y.backward(seed); });
  EXPECT_NE(e.find("MulBackward"), std::string::npos) << e;
  EXPECT_NE(e.find("input 0"), std::string::npos) << e;  // x's, not w's (1e-10 x 10: finite)
  // A finite backward passes; an inf seed is named as such.
  Variable z = sum(scale(x, 2.0));
  EXPECT_NO_THROW(z.backward());
  Variable z2 = sum(scale(x, 2.0));
  const std::string s = error_of([&] {
    z2.backward(Tensor::full({}, std::numeric_limits<double>::infinity(), DType::kFloat32));
  });
  EXPECT_NE(s.find("seed"), std::string::npos) << s;
}

TEST(Anomaly, AllFiniteSeesInfAndNanInEveryFloatType) {
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16}) {
    Tensor t = Tensor::full({5}, 1.5, DType::kFloat32).to(dt);
    EXPECT_TRUE(all_finite(t)) << tensor::dtype_name(dt);
    for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
      std::vector<float> v = {1, 2, 3, 4, 5};
      v[3] = static_cast<float>(bad);
      EXPECT_FALSE(all_finite(Tensor::from_vector(v, {5}).to(dt))) << tensor::dtype_name(dt);
    }
  }
  EXPECT_TRUE(all_finite(Tensor::from_vector(std::vector<int64_t>{1, 2}, {2})));
}

}  // namespace
}  // namespace mlai::autograd
