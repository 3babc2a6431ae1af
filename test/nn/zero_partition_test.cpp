// ZeRO stage 1's single-process parts: the partition of parameters over ranks, and an optimizer
// that owns some of its parameters (it steps and keeps state for those alone). The two-rank
// training is tested in test/dist/zero_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "nn/optim.h"
#include "nn/zero.h"

namespace mlai::nn {
namespace {

TEST(ZeroPartition, LargestFirstToTheLeastLoadedRank) {
  // 10 -> 0; 7 -> 1; 7 -> 1 (10 vs 7); 3 -> 0 (10 vs 14); 2 -> 0 (13 vs 14); ties go low.
  EXPECT_EQ(partition_parameters({10, 3, 7, 7, 2}, 2), (std::vector<int>{0, 0, 1, 1, 0}));
  EXPECT_EQ(partition_parameters({4, 4, 4}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(partition_parameters({5, 1}, 4), (std::vector<int>{0, 1}));  // ranks left empty
  EXPECT_EQ(partition_parameters({5, 1, 2}, 1), (std::vector<int>{0, 0, 0}));
  EXPECT_THROW(partition_parameters({1}, 0), std::invalid_argument);
  // Balanced within the largest parameter: ResNet-18-like sizes over 8 ranks.
  std::vector<int64_t> sizes;
  for (int64_t c : {64, 128, 256, 512})
    for (int k = 0; k < 4; ++k) {
      sizes.push_back(c * c * 9);
      sizes.push_back(c);
    }
  const std::vector<int> owner = partition_parameters(sizes, 8);
  std::vector<int64_t> load(8, 0);
  for (size_t i = 0; i < sizes.size(); ++i) load[static_cast<size_t>(owner[i])] += sizes[i];
  const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
  EXPECT_LE(*hi - *lo, 512 * 512 * 9);
  EXPECT_EQ(std::accumulate(load.begin(), load.end(), int64_t{0}),
            std::accumulate(sizes.begin(), sizes.end(), int64_t{0}));
}

TEST(ZeroPartition, AnOptimizerStepsOnlyWhatItOwns) {
  for (const char* name : {"sgd", "adamw", "lamb"}) {
    SCOPED_TRACE(name);
    Variable a{Tensor::full({3}, 1.0), true}, b{Tensor::full({2, 2}, 2.0), true};
    OptimizerConfig c;
    c.name = name;
    c.lr = 0.1;
    c.momentum = 0.9;
    const int64_t whole = make_optimizer({{"a", a}, {"b", b}}, c)->state_bytes();
    c.owned = {false, true};
    auto opt = make_optimizer({{"a", a}, {"b", b}}, c);
    EXPECT_EQ(whole, static_cast<int64_t>(opt->slot_count()) * 7 * 4);
    EXPECT_EQ(opt->state_bytes(), static_cast<int64_t>(opt->slot_count()) * 4 * 4);
    for (const auto& [n, t] : opt->state()) EXPECT_EQ(t->defined(), n[0] == 'b') << n;
    a.set_grad(Tensor::full({3}, 0.5));
    b.set_grad(Tensor::full({2, 2}, 0.5));
    EXPECT_EQ(opt->gradients().size(), 2u);  // (every gradient: the scaler checks them all)
    opt->step();
    EXPECT_EQ(a.data().to_double_vector(), std::vector<double>(3, 1.0));
    for (double x : b.data().to_double_vector()) EXPECT_LT(x, 2.0);
    c.owned = {true};
    EXPECT_THROW(make_optimizer({{"a", a}, {"b", b}}, c), std::invalid_argument);
  }
}

}  // namespace
}  // namespace mlai::nn
