// Tests for io/h5dataset: packed HDF5 round trips (plain and compressed), the on-demand
// H5ImageReader (also from several threads at once), and --dataset hdf5 in load_dataset.
#include "io/h5dataset.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "dataset_test_util.h"
#include "io/h5file.h"

namespace fs = std::filesystem;
using mlai::io::Dataset;
using mlai::testing::error_of;
using mlai::testing::random_dataset;

namespace {

class H5DatasetTest : public mlai::testing::TempDirTest {};

void expect_same(const Dataset& a, const Dataset& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.height, b.height);
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.channels, b.channels);
  EXPECT_EQ(a.num_classes, b.num_classes);
  EXPECT_EQ(a.class_names, b.class_names);
  EXPECT_EQ(a.mean, b.mean);  // floats survive the JSON round trip exactly
  EXPECT_EQ(a.std, b.std);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_TRUE(a.images == b.images);
}

TEST_F(H5DatasetTest, RoundTripPlainAndCompressed) {
  Dataset d = random_dataset(150, 5, 4, 3);  // 150: the last chunk of 64 is partial
  d.mean = {0.4914f, 0.4822f, 0.4465f};
  for (int level : {0, 6}) {
    const std::string p = path("d" + std::to_string(level) + ".h5");
    std::vector<std::pair<int64_t, int64_t>> calls;
    mlai::io::write_h5_dataset(d, p, "unit test", level, [&](int64_t done, int64_t total) {
      calls.push_back({done, total});
    });
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls.back(), (std::pair<int64_t, int64_t>{150, 150}));
    expect_same(mlai::io::read_h5_dataset(p), d);
    mlai::io::H5Reader r(p);
    EXPECT_EQ(r.get_attr_string("/", "format"), "mlai-images-1");
    EXPECT_EQ(r.get_attr_string("/", "source"), "unit test");
    EXPECT_EQ(r.get_attr_int("/", "num_classes"), 10);
    EXPECT_EQ(r.get_attr_string("/", "mean"), "[0.4914,0.4822,0.4465]");
    const auto info = r.info("images");
    EXPECT_EQ(info.layout.chunk, (std::vector<int64_t>{64, 5, 4, 3}));
    EXPECT_EQ(info.layout.deflate, level);
  }
  // Random bytes do not compress; constant images do, a lot.
  Dataset flat = random_dataset(150, 32, 32, 3);
  std::fill(flat.images.begin(), flat.images.end(), uint8_t{7});
  mlai::io::write_h5_dataset(flat, path("flat.h5"), "", 9);
  EXPECT_LT(fs::file_size(path("flat.h5")), flat.images.size() / 4);
  expect_same(mlai::io::read_h5_dataset(path("flat.h5")), flat);
}

TEST_F(H5DatasetTest, WriterRejectsInconsistentDatasets) {
  Dataset d = random_dataset(10, 2, 2, 1);
  EXPECT_THROW(mlai::io::write_h5_dataset(d, path("x.h5"), "", 10), std::invalid_argument);
  d.labels[3] = 10;
  std::string msg = error_of([&] { mlai::io::write_h5_dataset(d, path("x.h5"), "", 0); });
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  d = random_dataset(10, 2, 2, 1);
  d.images.pop_back();
  msg = error_of([&] { mlai::io::write_h5_dataset(d, path("x.h5"), "", 0); });
  EXPECT_NE(msg.find("images hold 39 bytes, expected 40"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path("x.h5")));
}

TEST_F(H5DatasetTest, ImageReaderMatchesTheFullRead) {
  const Dataset d = random_dataset(200, 6, 5, 3);
  for (int level : {0, 4}) {
    const std::string p = path("r.h5");
    mlai::io::write_h5_dataset(d, p, "reader test", level);
    mlai::io::H5ImageReader reader(p);
    EXPECT_EQ(reader.count(), 200);
    EXPECT_EQ(reader.sample_bytes(), 90);
    EXPECT_EQ(reader.source(), "reader test");
    EXPECT_TRUE(reader.info().images.empty());
    EXPECT_EQ(reader.info().labels, d.labels);
    std::vector<uint8_t> one(90), range(90 * 70);
    for (int64_t i : {0, 1, 63, 64, 65, 127, 199}) {
      reader.read(i, one.data());
      EXPECT_EQ(std::memcmp(one.data(), &d.images[static_cast<size_t>(i * 90)], 90), 0) << i;
      EXPECT_EQ(reader.label(i), d.labels[static_cast<size_t>(i)]);
    }
    reader.read(60, 70, range.data());  // spans three chunks
    EXPECT_EQ(std::memcmp(range.data(), &d.images[60 * 90], range.size()), 0);
    std::string msg = error_of([&] { reader.read(195, 6, range.data()); });
    EXPECT_NE(msg.find("rows [195, 201) are outside its 200 rows"), std::string::npos) << msg;
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_THROW(reader.label(200), std::out_of_range);
    EXPECT_THROW(reader.read(-1, one.data()), std::runtime_error);
  }
}

TEST_F(H5DatasetTest, ImageReaderFromSeveralThreadsAtOnce) {
  const Dataset d = random_dataset(500, 8, 8, 3);
  const std::string p = path("threads.h5");
  mlai::io::write_h5_dataset(d, p, "", 3);
  const mlai::io::H5ImageReader reader(p);
  const int64_t b = reader.sample_bytes();
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> buf(static_cast<size_t>(b * 3));
      for (int pass = 0; pass < 3; ++pass) {
        for (int64_t k = 0; k < 500; ++k) {
          const int64_t i = (k * (2 * t + 1) * 37 + pass) % 498;  // each thread its own order
          reader.read(i, 3, buf.data());
          if (std::memcmp(buf.data(), &d.images[static_cast<size_t>(i * b)], buf.size()) != 0)
            ++mismatches[static_cast<size_t>(t)];
        }
      }
    });
  }
  // Meanwhile this thread writes and reads other HDF5 files (a checkpoint, say).
  for (int k = 0; k < 5; ++k) {
    mlai::io::write_h5_dataset(random_dataset(70, 4, 4, 1), path("side.h5"), "", 1);
    EXPECT_EQ(mlai::io::read_h5_dataset(path("side.h5")).count, 70);
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, (std::vector<int>{0, 0, 0, 0}));
}

TEST_F(H5DatasetTest, Hdf5PathsRule) {
  auto p = mlai::io::hdf5_paths("data/fmnist-train.h5");
  EXPECT_EQ(p.train, "data/fmnist-train.h5");
  EXPECT_EQ(p.test, "data/fmnist-test.h5");
  EXPECT_FALSE(p.test_required);
  EXPECT_EQ(mlai::io::hdf5_paths("train/x_train.h5").test, "train/x_test.h5");  // file name only
  EXPECT_EQ(mlai::io::hdf5_paths("data/all.h5").test, "");
  p = mlai::io::hdf5_paths("a.h5,b.h5");
  EXPECT_EQ(p.train, "a.h5");
  EXPECT_EQ(p.test, "b.h5");
  EXPECT_TRUE(p.test_required);
  EXPECT_THROW(mlai::io::hdf5_paths(""), std::invalid_argument);
  EXPECT_THROW(mlai::io::hdf5_paths("a.h5,"), std::invalid_argument);
  EXPECT_THROW(mlai::io::hdf5_paths("a.h5,b.h5,c.h5"), std::invalid_argument);
}

TEST_F(H5DatasetTest, LoadDatasetFindsTheTestFile) {
  const Dataset train = random_dataset(100, 4, 4, 1, 5, 1);
  Dataset test = random_dataset(30, 4, 4, 1, 5, 2);
  test.mean = {0.9f}, test.std = {0.05f};  // its own statistics (mlai_convert --from folder)
  mlai::io::write_h5_dataset(train, path("s-train.h5"), "", 0);
  mlai::io::write_h5_dataset(test, path("s-test.h5"), "", 0);
  auto s = mlai::io::load_dataset("hdf5", "", 0.2, 1, path("s-train.h5"));
  EXPECT_EQ(s.train.count, 80);
  EXPECT_EQ(s.val.count, 20);
  EXPECT_EQ(s.test.count, 30);
  EXPECT_EQ(s.test.labels, test.labels);
  EXPECT_TRUE(s.warnings.empty());
  // The test set is normalized as the training set is: with the training file's statistics.
  EXPECT_EQ(s.test.mean, train.mean);
  EXPECT_EQ(s.test.std, train.std);
  s = mlai::io::load_dataset("hdf5", "", 0.0, 1, path("s-test.h5") + "," + path("s-train.h5"));
  EXPECT_EQ(s.train.count, 30);
  EXPECT_EQ(s.test.count, 100);
  // No sibling: train and validate only, with a warning for the caller to print.
  fs::rename(path("s-test.h5"), path("other.h5"));
  s = mlai::io::load_dataset("hdf5", "", 0.1, 1, path("s-train.h5"));
  EXPECT_EQ(s.test.count, 0);
  EXPECT_EQ(s.test.channels, 1);
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_NE(s.warnings[0].find("no test set: " + path("s-test.h5") + " does not exist"),
            std::string::npos)
      << s.warnings[0];
  // A named test file must exist and match the training file.
  std::string msg = error_of([&] {
    mlai::io::load_dataset("hdf5", "", 0.1, 1, path("s-train.h5") + "," + path("s-test.h5"));
  });
  EXPECT_NE(msg.find(path("s-test.h5")), std::string::npos) << msg;
  mlai::io::write_h5_dataset(random_dataset(30, 4, 4, 3, 5), path("rgb.h5"), "", 0);
  msg = error_of([&] {
    mlai::io::load_dataset("hdf5", "", 0.1, 1, path("s-train.h5") + "," + path("rgb.h5"));
  });
  EXPECT_NE(msg.find("4x4x3 images in 5 classes but"), std::string::npos) << msg;
  EXPECT_THROW(mlai::io::load_dataset("hdf5", "", 0.1, 1, ""), std::invalid_argument);
}

}  // namespace
