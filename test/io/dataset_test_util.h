// Shared by the packed-dataset tests: a per-test temp directory, a small random Dataset, PNG
// files, and a helper that returns an exception's message (checking that it is one line).
#pragma once

#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io/dataset.h"

namespace mlai::testing {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("mlai_" + std::string(::testing::UnitTest::GetInstance()->current_test_suite()->name()) +
         "_" + std::to_string(getpid()) + "_" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

// n random images of h x w x c with labels in [0, classes).
inline io::Dataset random_dataset(int64_t n, int64_t h, int64_t w, int64_t c, int classes = 10,
                                  uint32_t seed = 3) {
  std::mt19937 rng(seed);
  io::Dataset d;
  d.name = "synthetic";
  d.count = n;
  d.height = h;
  d.width = w;
  d.channels = c;
  d.num_classes = classes;
  d.images.resize(static_cast<size_t>(n * h * w * c));
  for (auto& b : d.images) b = static_cast<uint8_t>(rng());
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int64_t>(rng() % classes));
  for (int k = 0; k < classes; ++k) d.class_names.push_back("class " + std::to_string(k));
  for (int64_t k = 0; k < c; ++k) {
    d.mean.push_back(0.1f * static_cast<float>(k + 1) + 0.0123f);
    d.std.push_back(0.3f + 0.01f * static_cast<float>(k));
  }
  return d;
}

// A PNG of h x w x c (1 or 3) pixels, its folder created.
inline void write_png(const std::string& path, int64_t h, int64_t w, int c,
                      const std::vector<uint8_t>& pixels) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(w);
  img.height = static_cast<png_uint_32>(h);
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  ASSERT_NE(png_image_write_to_file(&img, path.c_str(), 0, pixels.data(), 0, nullptr), 0)
      << img.message;
}

template <typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

}  // namespace mlai::testing
