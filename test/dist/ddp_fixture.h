// The dist suite's fixture: two MPI ranks (mpirun -np 2; other world sizes skip; the hybrid
// sharding suite runs at 4 too), each with its own copy of a small synthetic MNIST-format set,
// a trainer configuration for it, and helpers to compare the weights two runs end with.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/process_group.h"
#include "nn/trainer.h"
#include "../nn/synthetic_data.h"

namespace mlai::dist {

namespace fs = std::filesystem;

inline ProcessGroup& group() { return ProcessGroup::get(); }

class Ddp : public ::testing::Test {
 protected:
  // The world sizes a suite runs at (the others skip it).
  virtual bool runs_at(int world) const { return world == 2; }
  void SetUp() override {
    if (!runs_at(group().world()))
      GTEST_SKIP() << "run under mpirun -np 2 (world is " << group().world() << ")";
    // Each rank writes its own copy of the same data, so nothing races on the file system.
    root = (fs::temp_directory_path() / ("mlai_ddp_" + std::to_string(getpid()))).string();
    fs::remove_all(root);
    testing::make_synthetic_mnist(root + "/data", 640, 200);
  }
  void TearDown() override {
    if (!root.empty()) fs::remove_all(root);
  }
  nn::Config config(int64_t batch) const {
    nn::Config c;
    c.dataset = "mnist";
    c.data_dir = root + "/data";
    c.log_dir = root + "/logs";
    c.device = "cpu";
    c.batch_size = batch;
    c.epochs = 2;
    c.limit_train_batches = "6";
    c.optimizer = "sgd";
    c.lr = 0.05;
    c.momentum = 0.9;
    c.lr_schedule = "constant";
    c.workers = 1;
    c.progress = false;
    c.checkpoint_every = 0;
    return c;
  }
  std::string root;
};

// What the ZeRO tests train with: float32 SGD, fp16 AdamW and bf16 LAMB, at these rates.
struct PrecisionCase {
  const char* optimizer;
  const char* precision;
  double lr;
};
inline constexpr PrecisionCase kPrecisionCases[] = {
    {"sgd", "32", 0.05}, {"adamw", "16", 0.003}, {"lamb", "bf16", 0.01}};

inline std::vector<double> flat_weights(nn::Trainer& t) {
  std::vector<double> w;
  for (auto& [n, v] : t.model().named_parameters())
    for (double x : v.data().to_double_vector()) w.push_back(x);
  return w;
}

// max |a - b| / max |b| (infinite when the sizes differ).
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

// A weighted sum of the values (each position its own weight): equal sums, equal vectors.
inline double checksum(const std::vector<double>& w) {
  double sum = 0;
  for (size_t i = 0; i < w.size(); ++i) sum += w[i] * static_cast<double>(i % 97 + 1);
  return sum;
}

// `relative` under rank 0's root (collective). Only rank 0 writes checkpoints (and knows its
// version directories): the other ranks read rank 0's files, one machine standing in for a
// shared file system.
inline std::string under_rank0_root(const std::string& relative) {
  const auto pid0 = static_cast<long>(allreduce_host(group(), group().rank() == 0 ? getpid() : 0));
  return (fs::temp_directory_path() / ("mlai_ddp_" + std::to_string(pid0))).string() + "/" +
         relative;
}

// True on every rank when every rank has the same value (collective).
inline bool same_on_every_rank(double v) {
  // (Both collectives on every rank: a short-circuit would skip the second where they differ.)
  const double max = allreduce_host(group(), v, true);
  const double min = -allreduce_host(group(), -v, true);
  return max == v && min == v;
}

}  // namespace mlai::dist
