// Tests for io/idx: small IDX files written byte by byte (plain and gzipped) into a temp dir,
// every validation error, and the real Fashion-MNIST when the dataset package is installed.
#include "io/idx.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace fs = std::filesystem;
using mlai::io::read_idx;

namespace {

std::string idx_bytes(uint8_t type, const std::vector<uint32_t>& dims,
                      const std::vector<uint8_t>& data) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>(d >> shift));
  }
  s.append(data.begin(), data.end());
  return s;
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  return v;
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlai_idx_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write_plain(const std::string& name, const std::string& bytes) {
    std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
  std::string write_gz(const std::string& name, const std::string& bytes) {
    std::string p = (dir_ / name).string();
    gzFile gz = gzopen(p.c_str(), "wb");
    EXPECT_NE(gz, nullptr);
    EXPECT_EQ(gzwrite(gz, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
    gzclose(gz);
    return p;
  }

  // Expects fn to throw a runtime_error whose message contains every fragment.
  template <typename Fn>
  void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
    try {
      fn();
      FAIL() << "expected an exception";
    } catch (const std::runtime_error& e) {
      std::string msg = e.what();
      for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message should be one line: " << msg;
    }
  }

  fs::path dir_;
};

TEST_F(IdxTest, ReadsPlainAndGzip) {
  auto data = iota_bytes(2 * 3 * 4);
  std::string bytes = idx_bytes(0x08, {2, 3, 4}, data);
  // The gzip file has no .gz suffix and the plain one has: detection must use the magic bytes.
  for (const auto& path : {write_plain("images.gz", bytes), write_gz("images", bytes)}) {
    auto a = read_idx(path, 3);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3, 4})) << path;
    EXPECT_EQ(a.data, data) << path;
  }
}

TEST_F(IdxTest, TruncatedFileNamesExpectedAndActualBytes) {
  std::string bytes = idx_bytes(0x08, {2, 3, 4}, iota_bytes(24));
  bytes.resize(bytes.size() - 5);
  auto p = write_plain("short-images", bytes);
  expect_error([&] { read_idx(p, 3); }, {p, "2x3x4 = 24", "found 19"});
  auto g = write_gz("short-images.gz", bytes);
  expect_error([&] { read_idx(g, 3); }, {g, "24", "found 19"});
}

TEST_F(IdxTest, TruncatedGzipStream) {
  std::string bytes = idx_bytes(0x08, {100, 10, 10}, iota_bytes(10000));
  auto g = write_gz("images.gz", bytes);
  fs::resize_file(g, fs::file_size(g) / 2);
  expect_error([&] { read_idx(g, 3); }, {g, "10000 data bytes"});
}

TEST_F(IdxTest, LabelsFileGivenAsImages) {
  auto p = write_plain("train-labels-idx1-ubyte", idx_bytes(0x08, {5}, iota_bytes(5)));
  expect_error([&] { read_idx(p, 3); },
               {p, "expected magic 2051 (images), found 2049 (is this a labels file?)"});
}

TEST_F(IdxTest, NdimMismatchAndBadHeaders) {
  auto p = write_plain("two-d", idx_bytes(0x08, {4, 4}, iota_bytes(16)));
  expect_error([&] { read_idx(p, 1); }, {p, "expected magic 2049 (labels), found 2050"});
  auto f = write_plain("floats", idx_bytes(0x0d, {4}, iota_bytes(16)));
  expect_error([&] { read_idx(f, 1); }, {f, "element type 0x0d"});
  auto junk = write_plain("junk", "hello world");
  expect_error([&] { read_idx(junk, 1); }, {junk, "not an IDX file"});
  auto tiny = write_plain("tiny", "ab");
  expect_error([&] { read_idx(tiny, 1); }, {tiny, "shorter than the 4-byte IDX header"});
}

TEST_F(IdxTest, ZeroDimension) {
  auto p = write_plain("zero", idx_bytes(0x08, {3, 0, 4}, {}));
  expect_error([&] { read_idx(p, 3); }, {p, "dimension 1 of 3 is 0"});
}

TEST_F(IdxTest, TrailingBytes) {
  auto bytes = idx_bytes(0x08, {6}, iota_bytes(9));
  auto p = write_plain("long", bytes);
  expect_error([&] { read_idx(p, 1); }, {p, "3 unexpected bytes after the 6 data bytes"});
  auto g = write_gz("long.gz", bytes);
  expect_error([&] { read_idx(g, 1); }, {g, "3 unexpected bytes"});
}

TEST_F(IdxTest, MissingFile) {
  auto p = (dir_ / "nope").string();
  expect_error([&] { read_idx(p, 1); }, {"cannot read " + p, "No such file"});
}

TEST_F(IdxTest, LoadPair) {
  auto img = write_gz("i.gz", idx_bytes(0x08, {3, 2, 2}, iota_bytes(12)));
  auto lab = write_plain("l", idx_bytes(0x08, {3}, {2, 0, 1}));
  auto set = mlai::io::load_idx_pair(img, lab, 3);
  EXPECT_EQ(set.count, 3);
  EXPECT_EQ(set.rows, 2);
  EXPECT_EQ(set.cols, 2);
  EXPECT_EQ(set.channels, 1);
  EXPECT_EQ(set.images, iota_bytes(12));
  EXPECT_EQ(set.labels, (std::vector<int64_t>{2, 0, 1}));
}

TEST_F(IdxTest, LabelOutOfRange) {
  auto img = write_plain("i", idx_bytes(0x08, {3, 2, 2}, iota_bytes(12)));
  auto lab = write_plain("l", idx_bytes(0x08, {3}, {2, 0, 10}));
  expect_error([&] { mlai::io::load_idx_pair(img, lab, 10); }, {lab, "label 10 at index 2"});
}

TEST_F(IdxTest, CountMismatch) {
  auto img = write_plain("i", idx_bytes(0x08, {3, 2, 2}, iota_bytes(12)));
  auto lab = write_plain("l", idx_bytes(0x08, {4}, {0, 1, 2, 3}));
  expect_error([&] { mlai::io::load_idx_pair(img, lab, 10); }, {img, lab, "3 images", "4 labels"});
}

TEST_F(IdxTest, FindFiles) {
  write_plain("train-images-idx3-ubyte", "x");
  write_plain("train-labels-idx1-ubyte.gz", "x");
  auto files = mlai::io::find_idx_files(dir_.string(), "train");
  EXPECT_EQ(files.images, (dir_ / "train-images-idx3-ubyte").string());
  EXPECT_EQ(files.labels, (dir_ / "train-labels-idx1-ubyte.gz").string());
  auto tried = (dir_ / "t10k-images-idx3-ubyte").string();
  expect_error([&] { mlai::io::find_idx_files(dir_.string(), "t10k"); },
               {"no t10k images", tried + ", " + tried + ".gz"});
  expect_error([&] { mlai::io::find_idx_files((dir_ / "absent").string(), "train"); },
               {"absent", "does not exist"});
}

TEST(IdxRealData, FashionMnistTrain) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  }
  auto files = mlai::io::find_idx_files(dir, "train");
  auto set = mlai::io::load_idx_pair(files.images, files.labels, 10);
  EXPECT_EQ(set.count, 60000);
  EXPECT_EQ(set.rows, 28);
  EXPECT_EQ(set.cols, 28);
  EXPECT_EQ(set.images.size(), size_t(60000) * 28 * 28);
  std::vector<int64_t> per_class(10, 0);
  for (int64_t l : set.labels) per_class[size_t(l)]++;
  for (int64_t c : per_class) EXPECT_EQ(c, 6000);  // Fashion-MNIST is balanced
}

}  // namespace
