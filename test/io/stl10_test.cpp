// Tests for io/stl10: STL-10's binary files written into a temp dir (each pixel's value says
// where it belongs), read back into NHWC with labels 0..9 and the class names; the files found
// in stl10_binary/ too; wrong sizes, label counts and labels refused naming the file.
#include "io/stl10.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataset_test_util.h"
#include "io/dataset.h"

namespace fs = std::filesystem;
using mlai::io::Dataset;
using mlai::testing::error_of;

namespace {

constexpr int64_t kSide = 96;

// The value of image i's pixel at (row, col) of channel c.
uint8_t pixel(int64_t i, int64_t row, int64_t col, int64_t c) {
  return static_cast<uint8_t>((i * 31 + row * 7 + col * 3 + c * 101) % 256);
}

// STL-10's layout: per image three planes, each column by column (MATLAB's order).
void write_images(const fs::path& path, int64_t n, int64_t extra_bytes = 0) {
  std::ofstream f(path, std::ios::binary);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t col = 0; col < kSide; ++col)
        for (int64_t row = 0; row < kSide; ++row) f.put(static_cast<char>(pixel(i, row, col, c)));
  for (int64_t k = 0; k < extra_bytes; ++k) f.put('\0');
}

void write_labels(const fs::path& path, const std::vector<uint8_t>& labels) {
  std::ofstream f(path, std::ios::binary);
  for (uint8_t l : labels) f.put(static_cast<char>(l));
}

class Stl10Test : public mlai::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    fs::create_directories(dir_ / "stl10_binary");
  }
};

TEST_F(Stl10Test, ReadsColumnMajorPlanesIntoNhwcWithLabelsFromZero) {
  const fs::path b = dir_ / "stl10_binary";  // as torchvision's STL10(root) leaves it
  write_images(b / "train_X.bin", 3);
  write_labels(b / "train_y.bin", {1, 10, 4});
  write_images(b / "test_X.bin", 2);
  write_labels(b / "test_y.bin", {2, 7});
  std::ofstream(b / "class_names.txt") << "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\n"
                                          "ship\ntruck\n";
  const Dataset d = mlai::io::load_stl10(dir_.string(), "train");
  ASSERT_EQ(d.count, 3);
  EXPECT_EQ(d.height, 96);
  EXPECT_EQ(d.width, 96);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 9, 3}));
  ASSERT_EQ(d.images.size(), static_cast<size_t>(3 * 96 * 96 * 3));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t row : {0, 1, 50, 95})
      for (int64_t col : {0, 2, 77, 95})
        for (int64_t c = 0; c < 3; ++c)
          ASSERT_EQ(d.images[static_cast<size_t>(((i * 96 + row) * 96 + col) * 3 + c)],
                    pixel(i, row, col, c))
              << "image " << i << " row " << row << " col " << col << " channel " << c;
  EXPECT_EQ(d.class_names.size(), 10u);
  EXPECT_EQ(d.class_names[7], "monkey");
  // load_dataset: the test split beside it, a seeded validation split of the training one.
  const mlai::io::DataSplits s = mlai::io::load_dataset("stl10", dir_.string(), 0.34, 1);
  EXPECT_EQ(s.train.count + s.val.count, 3);
  EXPECT_EQ(s.val.count, 1);
  EXPECT_EQ(s.test.count, 2);
  EXPECT_EQ(s.test.labels, (std::vector<int64_t>{1, 6}));
}

TEST_F(Stl10Test, BadFilesAreErrorsNamingTheFile) {
  const fs::path x = dir_ / "train_X.bin", y = dir_ / "train_y.bin";
  // Nothing there: every path tried is named.
  std::string e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find((dir_ / "stl10_binary" / "train_X.bin").string()), std::string::npos) << e;
  write_images(x, 2);
  e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find("train_y.bin"), std::string::npos) << e;  // labels missing
  write_labels(y, {1, 2, 3});
  e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find("3 labels for the 2 images"), std::string::npos) << e;
  write_labels(y, {1, 11});
  e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find("record 1 has label 11"), std::string::npos) << e;
  EXPECT_NE(e.find(y.string()), std::string::npos) << e;
  write_labels(y, {0, 1});
  e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find("record 0 has label 0"), std::string::npos) << e;
  write_images(x, 2, 5);  // truncated or padded: not whole images
  write_labels(y, {1, 2});
  e = error_of([&] { mlai::io::load_stl10(dir_.string(), "train"); });
  EXPECT_NE(e.find("not a whole number"), std::string::npos) << e;
  EXPECT_NE(e.find(x.string()), std::string::npos) << e;
  EXPECT_THROW(mlai::io::load_stl10(dir_.string(), "unlabeled"), std::invalid_argument);
}

}  // namespace
