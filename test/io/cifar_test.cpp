// Tests for io/cifar: CIFAR-10 and CIFAR-100 binary files written record by record into a temp
// dir, read back with the planes interleaved into NHWC; missing, truncated and mislabelled
// files; CIFAR-100's fine labels and names; load_dataset.
#include "io/cifar.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "dataset_test_util.h"

namespace fs = std::filesystem;
using mlai::io::Dataset;

namespace {

using mlai::testing::error_of;

// Pixel (row-major position p in the 32x32 plane, channel c) of the record with global index r.
uint8_t pixel(int64_t r, int64_t p, int64_t c) {
  return static_cast<uint8_t>((r * 7 + p * 3 + c * 101) % 256);
}

// Writes records [first, first + labels.size()) in CIFAR-10's format: label, R, G, B planes.
void write_batch(const fs::path& path, int64_t first, const std::vector<uint8_t>& labels) {
  std::ofstream f(path, std::ios::binary);
  for (size_t k = 0; k < labels.size(); ++k) {
    const int64_t r = first + static_cast<int64_t>(k);
    f.put(static_cast<char>(labels[k]));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 1024; ++p) f.put(static_cast<char>(pixel(r, p, c)));
  }
}

// Writes records [first, first + fine.size()) in CIFAR-100's format: coarse label, fine label,
// R, G, B planes.
void write_cifar100(const fs::path& path, int64_t first, const std::vector<uint8_t>& coarse,
                    const std::vector<uint8_t>& fine) {
  std::ofstream f(path, std::ios::binary);
  for (size_t k = 0; k < fine.size(); ++k) {
    const int64_t r = first + static_cast<int64_t>(k);
    f.put(static_cast<char>(coarse[k]));
    f.put(static_cast<char>(fine[k]));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 1024; ++p) f.put(static_cast<char>(pixel(r, p, c)));
  }
}

class CifarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlai_cifar_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Five train batches of 1, 2, 1, 1, 3 records (labels 0..7 in order) and a test batch of 2.
  void write_all(const fs::path& dir) {
    fs::create_directories(dir);
    const int counts[5] = {1, 2, 1, 1, 3};
    int64_t r = 0;
    for (int b = 0; b < 5; ++b) {
      std::vector<uint8_t> labels;
      for (int k = 0; k < counts[b]; ++k) labels.push_back(static_cast<uint8_t>(r + k));
      write_batch(dir / ("data_batch_" + std::to_string(b + 1) + ".bin"), r, labels);
      r += counts[b];
    }
    write_batch(dir / "test_batch.bin", 100, {9, 3});
  }


  fs::path dir_;
};

TEST_F(CifarTest, InterleavesPlanesIntoNhwcAndConcatenatesBatchesInOrder) {
  write_all(dir_);
  const Dataset d = mlai::io::load_cifar("cifar10", dir_.string(), "train");
  EXPECT_EQ(d.count, 8);
  EXPECT_EQ(d.height, 32);
  EXPECT_EQ(d.width, 32);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.num_classes, 10);
  ASSERT_EQ(d.images.size(), 8u * 3072);
  for (int64_t r = 0; r < 8; ++r) {
    EXPECT_EQ(d.labels[static_cast<size_t>(r)], r);
    for (int64_t p = 0; p < 1024; ++p)
      for (int64_t c = 0; c < 3; ++c)
        ASSERT_EQ(d.images[static_cast<size_t>((r * 1024 + p) * 3 + c)], pixel(r, p, c))
            << "record " << r << " pixel " << p << " channel " << c;
  }
  // Spot values: record 0, pixel (row 0, col 1) is R=3, G=104, B=205, stored next to each other.
  EXPECT_EQ(d.images[3], 3);
  EXPECT_EQ(d.images[4], 104);
  EXPECT_EQ(d.images[5], 205);
  EXPECT_EQ(d.class_names.front(), "airplane");
  EXPECT_EQ(d.class_names.back(), "truck");
  EXPECT_EQ(d.mean, (std::vector<float>{0.4914f, 0.4822f, 0.4465f}));
  EXPECT_EQ(d.std, (std::vector<float>{0.2470f, 0.2435f, 0.2616f}));

  const Dataset t = mlai::io::load_cifar("cifar10", dir_.string(), "test");
  EXPECT_EQ(t.count, 2);
  EXPECT_EQ(t.labels, (std::vector<int64_t>{9, 3}));
  EXPECT_EQ(t.images[(1 * 1024 + 5) * 3 + 2], pixel(101, 5, 2));
}

TEST_F(CifarTest, FindsTheTarballSubfolder) {
  write_all(dir_ / "cifar-10-batches-bin");
  const auto files = mlai::io::find_cifar_files("cifar10", dir_.string(), "train");
  ASSERT_EQ(files.size(), 5u);
  EXPECT_EQ(files[4], (dir_ / "cifar-10-batches-bin" / "data_batch_5.bin").string());
  EXPECT_EQ(mlai::io::load_cifar("cifar10", dir_.string(), "test").count, 2);
}

TEST_F(CifarTest, MissingFilesListWhatWasTried) {
  std::string msg = error_of([&] { mlai::io::load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find((dir_ / "data_batch_1.bin").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir_ / "cifar-10-batches-bin" / "data_batch_1.bin").string()),
            std::string::npos)
      << msg;
  write_all(dir_);
  fs::remove(dir_ / "data_batch_3.bin");
  msg = error_of([&] { mlai::io::load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("data_batch_3.bin"), std::string::npos) << msg;
  EXPECT_EQ(mlai::io::load_cifar("cifar10", dir_.string(), "test").count, 2);  // test needs no train
  EXPECT_THROW(mlai::io::find_cifar_files("cifar10", dir_.string(), "val"), std::invalid_argument);
}

TEST_F(CifarTest, TruncatedAndEmptyFilesNameTheirSize) {
  write_all(dir_);
  const fs::path p = dir_ / "data_batch_2.bin";
  fs::resize_file(p, 2 * 3073 - 5);
  std::string msg = error_of([&] { mlai::io::load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("cannot read " + p.string() +
                     ": size 6141 is not a multiple of 3073 bytes (truncated?"),
            std::string::npos)
      << msg;
  fs::resize_file(dir_ / "test_batch.bin", 0);
  msg = error_of([&] { mlai::io::load_cifar("cifar10", dir_.string(), "test"); });
  EXPECT_NE(msg.find("size 0 is not a multiple of 3073"), std::string::npos) << msg;
}

TEST_F(CifarTest, LabelAboveNineNamesFileAndRecord) {
  write_all(dir_);
  write_batch(dir_ / "data_batch_4.bin", 0, {1, 2, 10});
  const std::string msg = error_of([&] { mlai::io::load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find((dir_ / "data_batch_4.bin").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("record 2 has label 10"), std::string::npos) << msg;
}

TEST_F(CifarTest, LoadDatasetSplitsValidationFromTrain) {
  write_all(dir_);
  const auto s = mlai::io::load_dataset("cifar10", dir_.string(), 0.25, 7);
  EXPECT_EQ(s.train.count, 6);
  EXPECT_EQ(s.val.count, 2);
  EXPECT_EQ(s.test.count, 2);
  EXPECT_EQ(s.train.name, "cifar10");
  EXPECT_TRUE(s.warnings.empty());
  const auto names = mlai::io::dataset_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cifar10"), names.end());
}

TEST_F(CifarTest, Cifar100ReadsFineLabelsPixelsAndClassNames) {
  const fs::path sub = dir_ / "cifar-100-binary";  // where the tarball unpacks
  fs::create_directories(sub);
  write_cifar100(sub / "train.bin", 0, {4, 19, 0}, {30, 99, 7});
  write_cifar100(sub / "test.bin", 50, {1, 2}, {5, 61});
  {
    std::ofstream names(sub / "fine_label_names.txt");
    for (int c = 0; c < 100; ++c) names << "class" << c << "\n";
  }
  const Dataset d = mlai::io::load_cifar("cifar100", dir_.string(), "train");
  EXPECT_EQ(d.name, "cifar100");
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.num_classes, 100);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{30, 99, 7}));  // the fine labels
  ASSERT_EQ(d.images.size(), 3u * 3072);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t p = 0; p < 1024; p += 37)
      for (int64_t c = 0; c < 3; ++c)
        ASSERT_EQ(d.images[static_cast<size_t>((r * 1024 + p) * 3 + c)], pixel(r, p, c));
  ASSERT_EQ(d.class_names.size(), 100u);
  EXPECT_EQ(d.class_names[99], "class99");
  EXPECT_EQ(d.mean.size(), 3u);
  const Dataset t = mlai::io::load_cifar("cifar100", dir_.string(), "test");
  EXPECT_EQ(t.labels, (std::vector<int64_t>{5, 61}));
  EXPECT_EQ(t.images[(1 * 1024 + 5) * 3 + 2], pixel(51, 5, 2));
  // Without the names file: the class numbers.
  fs::remove(sub / "fine_label_names.txt");
  EXPECT_EQ(mlai::io::load_cifar("cifar100", dir_.string(), "test").class_names[42], "42");
  const auto s = mlai::io::load_dataset("cifar100", dir_.string(), 0.0, 1);
  EXPECT_EQ(s.train.count, 3);
  EXPECT_EQ(s.test.count, 2);
}

TEST_F(CifarTest, Cifar100BadLabelsSizesAndMissingFilesAreNamed) {
  write_cifar100(dir_ / "train.bin", 0, {1, 2, 3}, {1, 100, 3});
  write_cifar100(dir_ / "test.bin", 0, {1}, {1});
  std::string msg = error_of([&] { mlai::io::load_cifar("cifar100", dir_.string(), "train"); });
  EXPECT_NE(msg.find((dir_ / "train.bin").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("record 1 has label 100 (expected 0..99"), std::string::npos) << msg;
  write_cifar100(dir_ / "train.bin", 0, {1, 20}, {1, 2});
  msg = error_of([&] { mlai::io::load_cifar("cifar100", dir_.string(), "train"); });
  EXPECT_NE(msg.find("record 1 has coarse label 20"), std::string::npos) << msg;
  // A CIFAR-10 batch given as CIFAR-100: 3073-byte records are not 3074-byte ones.
  write_batch(dir_ / "train.bin", 0, {1, 2, 3});
  msg = error_of([&] { mlai::io::load_cifar("cifar100", dir_.string(), "train"); });
  EXPECT_NE(msg.find("is not a multiple of 3074 bytes"), std::string::npos) << msg;
  fs::remove(dir_ / "train.bin");
  msg = error_of([&] { mlai::io::load_cifar("cifar100", dir_.string(), "train"); });
  EXPECT_NE(msg.find("cifar-100-binary.tar.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir_ / "cifar-100-binary" / "train.bin").string()), std::string::npos)
      << msg;
  const auto names = mlai::io::dataset_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cifar100"), names.end());
}

}  // namespace
