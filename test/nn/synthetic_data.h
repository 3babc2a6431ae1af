// Writes a small learnable MNIST-format data set (IDX files) for trainer tests: class c is a
// bright 6x6 square at a class-specific place plus noise.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nn/config.h"

namespace mlai::testing {

inline void write_idx(const std::string& path, uint32_t magic, const std::vector<uint32_t>& dims,
                      const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  auto be32 = [&](uint32_t v) {
    const char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    f.write(b, 4);
  };
  be32(magic);
  for (uint32_t d : dims) be32(d);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

// Creates dir with train (n_train) and t10k (n_test) files; returns dir.
inline std::string make_synthetic_mnist(const std::string& dir, uint32_t n_train = 640,
                                        uint32_t n_test = 200, uint32_t seed = 1) {
  std::filesystem::create_directories(dir);
  std::mt19937 rng(seed);
  auto make = [&](const std::string& split, uint32_t n) {
    std::vector<uint8_t> img(static_cast<size_t>(n) * 28 * 28), lab(n);
    for (uint32_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(rng() % 10);
      lab[i] = static_cast<uint8_t>(c);
      const int r0 = 2 + (c / 5) * 12, c0 = 1 + (c % 5) * 5;
      for (int r = 0; r < 28; ++r)
        for (int k = 0; k < 28; ++k) {
          int v = static_cast<int>(rng() % 60);
          if (r >= r0 && r < r0 + 6 && k >= c0 && k < c0 + 6) v += 150;
          img[(static_cast<size_t>(i) * 28 + r) * 28 + k] = static_cast<uint8_t>(v);
        }
    }
    write_idx(dir + "/" + split + "-images-idx3-ubyte", 0x803, {n, 28, 28}, img);
    write_idx(dir + "/" + split + "-labels-idx1-ubyte", 0x801, {n}, lab);
  };
  make("train", n_train);
  make("t10k", n_test);
  return dir;
}

// A fixture with its own temporary folder, `root`, named after the test and holding the
// synthetic set in root/data; removed afterwards.
class SyntheticDataTest : public ::testing::Test {
 protected:
  std::string root;
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root = (std::filesystem::temp_directory_path() /
            ("mlai_" + std::string(info->test_suite_name()) + "_" + std::to_string(::getpid()) +
             "_" + info->name()))
               .string();
    std::filesystem::remove_all(root);
    make_synthetic_mnist(root + "/data");
  }
  void TearDown() override { std::filesystem::remove_all(root); }
  // A CPU run on that set, logging under root/logs, batch 32, no progress line.
  nn::Config synthetic_config() const {
    nn::Config c;
    c.dataset = "mnist";
    c.data_dir = root + "/data";
    c.log_dir = root + "/logs";
    c.device = "cpu";
    c.batch_size = 32;
    c.progress = false;
    return c;
  }
};

}  // namespace mlai::testing
