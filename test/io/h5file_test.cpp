// Tests for io/h5file: round trips of every dtype, torchvision-style nested names, attributes,
// the error messages for missing/mismatched/truncated data, and the atomic-commit guarantees.
#include "io/h5file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;
using mlai::io::H5Reader;
using mlai::io::H5Type;
using mlai::io::H5Writer;

namespace {

class H5FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlai_h5_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "ckpt.h5").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  template <typename Fn>
  void expect_error(Fn fn, std::initializer_list<std::string> fragments) {
    try {
      fn();
      FAIL() << "expected an exception";
    } catch (const std::runtime_error& e) {
      std::string msg = e.what();
      for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(H5FileTest, RoundTripEveryDtype) {
  const std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, 4e30f, 0.f, -0.f};
  const std::vector<double> f64 = {1.0 / 3, -1e300};
  const std::vector<int64_t> i64 = {INT64_MIN, -1, 0, INT64_MAX};
  const std::vector<int32_t> i32 = {INT32_MIN, 7, INT32_MAX};
  const std::vector<uint8_t> u8 = {0, 128, 255, 1};
  const int64_t scalar = 123456789012345;
  {
    H5Writer w(path_);
    w.write("f32", H5Type::kFloat32, {2, 3}, f32.data());
    w.write("f64", H5Type::kFloat64, {2}, f64.data());
    w.write("i64", H5Type::kInt64, {2, 1, 2}, i64.data());
    w.write("i32", H5Type::kInt32, {3}, i32.data());
    w.write("u8", H5Type::kUInt8, {4}, u8.data());
    w.write("step", H5Type::kInt64, {}, &scalar);
    w.write("empty", H5Type::kFloat32, {0, 4}, nullptr);
    w.commit();
  }
  EXPECT_FALSE(fs::exists(path_ + ".tmp." + std::to_string(getpid())));
  H5Reader r(path_);
  auto check = [&](const std::string& name, H5Type type, std::vector<int64_t> shape, auto want) {
    auto info = r.info(name);
    EXPECT_EQ(info.dtype, type) << name;
    EXPECT_EQ(info.shape, shape) << name;
    decltype(want) got(want.size());
    r.read(name, type, got.data(), shape);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(want[0])), 0) << name;
  };
  check("f32", H5Type::kFloat32, {2, 3}, f32);
  check("f64", H5Type::kFloat64, {2}, f64);
  check("i64", H5Type::kInt64, {2, 1, 2}, i64);
  check("i32", H5Type::kInt32, {3}, i32);
  check("u8", H5Type::kUInt8, {4}, u8);
  check("step", H5Type::kInt64, {}, std::vector<int64_t>{scalar});
  EXPECT_EQ(r.info("empty").numel(), 0);
  r.read("empty", H5Type::kFloat32, nullptr, 0);
}

TEST_F(H5FileTest, NestedNamesKeepDots) {
  const float v[4] = {1, 2, 3, 4};
  {
    H5Writer w(path_);
    w.write("model/layer1.0.conv1.weight", H5Type::kFloat32, {2, 2}, v);
    w.write("model/fc.bias", H5Type::kFloat32, {4}, v);
    w.write("/optimizer/state/0.momentum", H5Type::kFloat32, {1}, v);
    expect_error([&] { w.write("model/fc.bias", H5Type::kFloat32, {4}, v); },
                 {"model/fc.bias", "already exists"});
    expect_error([&] { w.write("model//x", H5Type::kFloat32, {4}, v); }, {"invalid dataset name"});
    w.commit();
  }
  H5Reader r(path_);
  EXPECT_EQ(r.list(), (std::vector<std::string>{"model", "optimizer"}));
  EXPECT_EQ(r.list("model"), (std::vector<std::string>{"fc.bias", "layer1.0.conv1.weight"}));
  EXPECT_EQ(r.list_datasets(),
            (std::vector<std::string>{"model/fc.bias", "model/layer1.0.conv1.weight",
                                      "optimizer/state/0.momentum"}));
  EXPECT_EQ(r.list_datasets("optimizer"), (std::vector<std::string>{"optimizer/state/0.momentum"}));
  EXPECT_TRUE(r.has("model/layer1.0.conv1.weight"));
  EXPECT_TRUE(r.has("optimizer/state"));
  EXPECT_FALSE(r.has("model/layer1"));  // no group was made for the dots
  EXPECT_FALSE(r.has("nothing/here"));
  float got[4] = {};
  r.read("optimizer/state/0.momentum", H5Type::kFloat32, got, 1);
  EXPECT_EQ(got[0], 1.0f);
  expect_error([&] { r.list("nothing"); }, {path_, "no group 'nothing'"});
}

TEST_F(H5FileTest, Attributes) {
  const double x = 0.5;
  {
    H5Writer w(path_);
    w.write("model/fc.weight", H5Type::kFloat64, {1}, &x);
    w.set_attr("/", "format", "mlai-checkpoint");
    w.set_attr("", "epoch", 7);
    w.set_attr("", "epoch", int64_t(8));  // replaces
    w.set_attr("/", "lr", 0.05);
    w.set_attr("/", "empty", std::string());
    w.set_attr("model/fc.weight", "layout", "OI");
    w.set_attr("optimizer", "momentum", 0.9);  // creates the group
    w.commit();
  }
  H5Reader r(path_);
  EXPECT_EQ(r.get_attr_string("/", "format"), "mlai-checkpoint");
  EXPECT_EQ(r.get_attr_int("", "epoch"), 8);
  EXPECT_DOUBLE_EQ(r.get_attr_double("/", "lr"), 0.05);
  EXPECT_DOUBLE_EQ(r.get_attr_double("/", "epoch"), 8.0);  // integers widen to double
  EXPECT_EQ(r.get_attr_string("/", "empty"), "");
  EXPECT_EQ(r.get_attr_string("model/fc.weight", "layout"), "OI");
  EXPECT_DOUBLE_EQ(r.get_attr_double("optimizer", "momentum"), 0.9);
  EXPECT_TRUE(r.has_attr("/", "lr"));
  EXPECT_FALSE(r.has_attr("/", "nope"));
  EXPECT_FALSE(r.has_attr("missing", "lr"));
  expect_error([&] { r.get_attr_int("/", "lr"); }, {path_, "'lr'", "not an integer"});
  expect_error([&] { r.get_attr_string("/", "nope"); }, {path_, "no such attribute"});
}

TEST_F(H5FileTest, ReadErrorsNameFileAndDataset) {
  const float v[6] = {};
  {
    H5Writer w(path_);
    w.write("model/fc.weight", H5Type::kFloat32, {2, 3}, v);
    w.commit();
  }
  H5Reader r(path_);
  float out[6];
  expect_error([&] { r.read("model/conv.weight", H5Type::kFloat32, out, 6); },
               {path_, "'model/conv.weight'", "no such dataset"});
  expect_error([&] { r.read("model/fc.weight", H5Type::kFloat32, out, 5); },
               {path_, "'model/fc.weight'", "has shape [2, 3] (6 elements), expected 5"});
  expect_error(
      [&] {
        r.read("model/fc.weight", H5Type::kFloat32, out, {3, 2});
      },
      {path_, "has shape [2, 3], expected [3, 2]"});
  expect_error([&] { r.read("model/fc.weight", H5Type::kFloat64, out, 6); },
               {path_, "stored as float32, expected float64"});
  expect_error([&] { r.info("model"); }, {path_, "not a dataset"});
}

TEST_F(H5FileTest, MissingNotHdf5AndTruncatedFiles) {
  expect_error([&] { H5Reader r((dir_ / "none.h5").string()); }, {"none.h5", "no such file"});
  const std::string text = (dir_ / "text.h5").string();
  std::ofstream(text) << "this is not HDF5\n";
  expect_error([&] { H5Reader r(text); }, {text, "not a valid HDF5 file"});

  std::vector<float> big(50000, 1.0f);
  {
    H5Writer w(path_);
    w.write("model/a", H5Type::kFloat32, {int64_t(big.size())}, big.data());
    w.write("model/b", H5Type::kFloat32, {int64_t(big.size())}, big.data());
    w.commit();
  }
  fs::resize_file(path_, fs::file_size(path_) / 2);
  expect_error(
      [&] {
        H5Reader r(path_);
        for (const auto& name : r.list_datasets())
          r.read(name, H5Type::kFloat32, big.data(), 50000);
      },
      {path_});
}

TEST_F(H5FileTest, UncommittedWriterLeavesNoTrace) {
  const int32_t v = 1;
  {
    H5Writer w(path_);
    w.write("x", H5Type::kInt32, {1}, &v);
    EXPECT_TRUE(fs::exists(w.temp_path()));
  }
  EXPECT_TRUE(fs::is_empty(dir_)) << "no destination and no temp file after an abandoned write";

  std::ofstream(path_) << "previous checkpoint";
  {
    H5Writer w(path_);
    w.write("x", H5Type::kInt32, {1}, &v);
  }
  std::ifstream in(path_);
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(contents, "previous checkpoint");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);

  {
    H5Writer w(path_);  // a committed writer does replace it
    w.write("x", H5Type::kInt32, {1}, &v);
    w.commit();
    expect_error([&] { w.commit(); }, {"already committed"});
  }
  int32_t got = 0;
  H5Reader(path_).read("x", H5Type::kInt32, &got, 1);
  EXPECT_EQ(got, 1);
}

TEST_F(H5FileTest, WriterCreatesParentDirectories) {
  const uint8_t v = 3;
  const std::string nested = (dir_ / "a" / "checkpoints" / "last.h5").string();
  H5Writer w(nested);
  w.write("v", H5Type::kUInt8, {1}, &v);
  w.commit();
  EXPECT_TRUE(H5Reader(nested).has("v"));
}

}  // namespace
