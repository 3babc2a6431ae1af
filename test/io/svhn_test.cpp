// Tests for io/matfile and io/svhn: level-5 MAT-files written here element by element (plain
// and zlib-compressed variables, small-element names, a double class stored as bytes as MATLAB
// stores it), read back; SVHN's X and y turned into NHWC pixels with 10 -> 0; every malformed
// input refused naming the file; and files scipy.io.savemat writes (where python3 has SciPy).
#include "io/svhn.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dataset_test_util.h"
#include "io/matfile.h"

namespace fs = std::filesystem;
using mlai::io::Dataset;
using mlai::io::MatArray;
using mlai::testing::error_of;

namespace {

constexpr uint32_t kInt8 = 1, kUInt8 = 2, kInt16 = 3, kInt32 = 5, kUInt32 = 6, kDouble = 9,
                   kMatrix = 14, kCompressed = 15;
constexpr int kDoubleClass = 6, kUInt8Class = 9, kInt16Class = 10, kCellClass = 1;

void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void pad8(std::string& s) { s.append((8 - s.size() % 8) % 8, '\0'); }

// One element: the small format for up to 4 bytes, else a tag and the data padded to 8.
std::string element(uint32_t type, const std::string& data) {
  std::string s;
  if (data.size() <= 4 && type != kMatrix) {
    put32(s, type | static_cast<uint32_t>(data.size()) << 16);
    s += data;
    s.append(4 - data.size(), '\0');
    return s;
  }
  put32(s, type);
  put32(s, static_cast<uint32_t>(data.size()));
  s += data;
  pad8(s);
  return s;
}

// A numeric variable: flags (class, complex), dims, name, values in `storage`.
std::string matrix(const std::string& name, int mx_class, const std::vector<int32_t>& dims,
                   uint32_t storage, const std::string& values, bool complex = false) {
  std::string flags;
  put32(flags, static_cast<uint32_t>(mx_class) | (complex ? 0x800u : 0u));
  put32(flags, 0);
  std::string d(reinterpret_cast<const char*>(dims.data()), dims.size() * 4);
  std::string body = element(kUInt32, flags) + element(kInt32, d) + element(kInt8, name);
  if (mx_class != kCellClass) body += element(storage, values);
  return element(kMatrix, body);
}

std::string compressed(const std::string& elem) {
  uLongf n = compressBound(elem.size());
  std::string z(n, '\0');
  EXPECT_EQ(compress(reinterpret_cast<Bytef*>(z.data()), &n,
                     reinterpret_cast<const Bytef*>(elem.data()), elem.size()),
            Z_OK);
  z.resize(n);
  std::string s;
  put32(s, kCompressed);
  put32(s, static_cast<uint32_t>(z.size()));
  return s + z;  // (no padding after compressed data, as MATLAB writes it)
}

std::string header(const char* text = "MATLAB 5.0 MAT-file, written by mlai's tests") {
  std::string h(text);
  h.resize(116, ' ');
  h.append(8, '\0');
  const uint16_t version = 0x0100;
  h.append(reinterpret_cast<const char*>(&version), 2);
  h += "IM";
  return h;
}

void write(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

uint8_t pixel(int64_t i, int64_t row, int64_t col, int64_t c) {
  return static_cast<uint8_t>((i * 29 + row * 5 + col * 11 + c * 83) % 256);
}

// SVHN's X in MATLAB's order: X(row, col, c, i) at row + 32 col + 1024 c + 3072 i.
std::string svhn_x(int64_t n) {
  std::vector<uint8_t> x(static_cast<size_t>(n * 3072));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t col = 0; col < 32; ++col)
        for (int64_t row = 0; row < 32; ++row)
          x[static_cast<size_t>(row + 32 * col + 1024 * c + 3072 * i)] = pixel(i, row, col, c);
  return raw(x);
}

class SvhnTest : public mlai::testing::TempDirTest {
 protected:
  // A split file: X compressed (as SVHN's are), y a double class stored as bytes.
  void write_split(const std::string& split, const std::vector<uint8_t>& labels) {
    const auto n = static_cast<int32_t>(labels.size());
    write(dir_ / (split + "_32x32.mat"),
          header() + compressed(matrix("X", kUInt8Class, {32, 32, 3, n}, kUInt8, svhn_x(n))) +
              matrix("y", kDoubleClass, {n, 1}, kUInt8, raw(labels)));
  }
};

TEST_F(SvhnTest, ReadsColumnMajorPixelsIntoNhwcAndTenAsZero) {
  write_split("train", {1, 10, 5});
  write_split("test", {10, 2});
  const Dataset d = mlai::io::load_svhn(dir_.string(), "train");
  ASSERT_EQ(d.count, 3);
  EXPECT_EQ(d.height, 32);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{1, 0, 5}));
  EXPECT_EQ(d.class_names.front(), "0");
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t row : {0, 1, 17, 31})
      for (int64_t col : {0, 3, 30, 31})
        for (int64_t c = 0; c < 3; ++c)
          ASSERT_EQ(d.images[static_cast<size_t>(((i * 32 + row) * 32 + col) * 3 + c)],
                    pixel(i, row, col, c))
              << i << " " << row << " " << col << " " << c;
  const mlai::io::DataSplits s = mlai::io::load_dataset("svhn", dir_.string(), 0.0, 1);
  EXPECT_EQ(s.train.count, 3);
  EXPECT_EQ(s.test.labels, (std::vector<int64_t>{0, 2}));
}

TEST(MatFile, ReadsStorageTypesAndSkipsWhatIsNotWanted) {
  const fs::path p = fs::temp_directory_path() / ("mlai_matfile_" + std::to_string(getpid()));
  const std::vector<int16_t> a = {-3, 7, 300, 0, 1, 2};
  const std::vector<double> b = {0.5, -2.0};
  write(p, header() + matrix("alpha", kInt16Class, {2, 3}, kInt16, raw(a)) +
               compressed(matrix("beta", kDoubleClass, {1, 2}, kDouble, raw(b))) +
               matrix("cells", kCellClass, {1, 1}, 0, ""));
  const std::vector<MatArray> all = mlai::io::read_mat(p.string());
  ASSERT_EQ(all.size(), 2u);  // the cell array is not a numeric variable
  EXPECT_EQ(all[0].name, "alpha");
  EXPECT_EQ(all[0].dims, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(all[0].as_int64("alpha"), (std::vector<int64_t>{-3, 7, 300, 0, 1, 2}));
  EXPECT_NE(error_of([&] { all[0].as_uint8("alpha"); }).find("not a byte"), std::string::npos);
  EXPECT_EQ(all[1].name, "beta");
  EXPECT_NE(error_of([&] { all[1].as_int64("beta"); }).find("not a whole number"),
            std::string::npos);
  const std::vector<MatArray> one = mlai::io::read_mat(p.string(), {"beta"});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].name, "beta");
  fs::remove(p);
}

TEST_F(SvhnTest, MalformedFilesAreErrorsNamingTheFile) {
  const fs::path p = dir_ / "train_32x32.mat";
  auto err = [&] { return error_of([&] { mlai::io::load_svhn(dir_.string(), "train"); }); };
  std::string e = err();
  EXPECT_NE(e.find("train_32x32.mat"), std::string::npos) << e;  // missing
  const std::string x = compressed(matrix("X", kUInt8Class, {32, 32, 3, 2}, kUInt8, svhn_x(2)));
  const std::string y = matrix("y", kDoubleClass, {2, 1}, kUInt8, raw(std::vector<uint8_t>{1, 2}));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not a MAT-file at all", "no 'MATLAB' header"},
      {header("MATLAB 7.3 MAT-file, Platform: GLNXA64") + x + y, "7.3"},
      {header().substr(0, 126) + "MI" + x + y, "big-endian"},
      {header() + x, "no variable 'y'"},
      {header() + x + y.substr(0, 40), "truncated"},
      {header() + x.substr(0, 8) + std::string(x.size() - 8, 'z') + y, "corrupt compressed"},
      {header() + x + matrix("y", kDoubleClass, {2, 1}, kUInt8, raw(std::vector<uint8_t>{1, 2}),
                             /*complex=*/true),
       "complex"},
      {header() + matrix("X", kUInt8Class, {32, 32, 2}, kUInt8, std::string(2048, '\1')) + y,
       "32 x 32 x 3 x N"},
      {header() + x + matrix("y", kDoubleClass, {3, 1}, kUInt8, raw(std::vector<uint8_t>{1, 2, 3})),
       "3 labels for 2 images"},
      {header() + x + matrix("y", kDoubleClass, {2, 1}, kUInt8, raw(std::vector<uint8_t>{0, 2})),
       "label 0 is 0"},
      {header() + x + matrix("y", kDoubleClass, {2, 1}, kDouble, raw(std::vector<double>{1, 2.5})),
       "not a whole number"},
  };
  for (const auto& [bytes, needle] : cases) {
    write(p, bytes);
    e = err();
    EXPECT_NE(e.find(needle), std::string::npos) << needle << ": " << e;
    EXPECT_NE(e.find(p.string()), std::string::npos) << needle << ": " << e;
  }
  EXPECT_THROW(mlai::io::load_svhn(dir_.string(), "validation"), std::invalid_argument);
}

// What scipy.io.savemat writes (as torchvision's files are read with scipy.io.loadmat):
// compressed and not, several dtypes, more variables than wanted.
TEST_F(SvhnTest, ReadsWhatScipyWrites) {
  if (std::system("python3 -c 'import numpy, scipy.io' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with NumPy and SciPy is not installed here";
  const fs::path script = dir_ / "write.py";
  std::ofstream(script) << R"PY(
import sys, numpy as np, scipy.io as sio
d = sys.argv[1]
X = (np.arange(32 * 32 * 3 * 4).reshape(32, 32, 3, 4, order="F") * 7 % 256).astype(np.uint8)
y = np.array([[10], [3], [1], [10]], dtype=np.float64)
sio.savemat(d + "/train_32x32.mat", {"X": X, "y": y, "note": "made by scipy"}, do_compression=True)
sio.savemat(d + "/test_32x32.mat", {"y": y[:2].astype(np.int16), "X": X[..., :2]})
sio.savemat(d + "/mixed.mat", {"f": np.array([[1.5, -2.25]], np.float32),
                               "u": np.array([[1, 70000]], np.uint32),
                               "i": np.array([[-5, 5]], np.int64)})
)PY";
  ASSERT_EQ(std::system(("python3 " + script.string() + " " + dir_.string()).c_str()), 0);
  const Dataset d = mlai::io::load_svhn(dir_.string(), "train");
  ASSERT_EQ(d.count, 4);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 3, 1, 0}));
  // X(row, col, c, i) = (row + 32 col + 1024 c + 3072 i) * 7 mod 256 (Fortran order).
  for (int64_t i : {0, 3})
    for (int64_t row : {0, 9, 31})
      for (int64_t col : {0, 20, 31})
        for (int64_t c = 0; c < 3; ++c)
          ASSERT_EQ(d.images[static_cast<size_t>(((i * 32 + row) * 32 + col) * 3 + c)],
                    static_cast<uint8_t>((row + 32 * col + 1024 * c + 3072 * i) * 7 % 256));
  const Dataset t = mlai::io::load_svhn(dir_.string(), "test");
  EXPECT_EQ(t.labels, (std::vector<int64_t>{0, 3}));
  const std::vector<MatArray> m = mlai::io::read_mat((dir_ / "mixed.mat").string());
  ASSERT_EQ(m.size(), 3u);
  for (const MatArray& a : m) {
    if (a.name == "u") {
      EXPECT_EQ(a.as_int64("u"), (std::vector<int64_t>{1, 70000}));
    } else if (a.name == "i") {
      EXPECT_EQ(a.as_int64("i"), (std::vector<int64_t>{-5, 5}));
    } else {
      EXPECT_EQ(a.name, "f");
      ASSERT_EQ(a.bytes.size(), 8u);
      float v[2];
      std::memcpy(v, a.bytes.data(), 8);
      EXPECT_EQ(v[0], 1.5f);
      EXPECT_EQ(v[1], -2.25f);
    }
  }
}

}  // namespace
