// Tests that packed HDF5 datasets that are corrupt, truncated or of the wrong shape, dtype or
// metadata are rejected with one line naming the file and the problem; and the row-range
// (chunked, hyperslab) API of io/h5file that the format is built on.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "dataset_test_util.h"
#include "io/h5dataset.h"
#include "io/h5file.h"

namespace fs = std::filesystem;
using mlai::io::H5Reader;
using mlai::io::H5Type;
using mlai::io::H5Writer;
using mlai::testing::error_of;

namespace {

class H5DatasetErrorsTest : public mlai::testing::TempDirTest {};

// A packed file built by hand; the defaults make a valid one (10 images of 4x4x1, 10 classes).
struct Spec {
  H5Type images_dtype = H5Type::kUInt8;
  std::vector<int64_t> images_shape = {10, 4, 4, 1};
  H5Type labels_dtype = H5Type::kInt64;
  std::vector<int64_t> labels_shape = {10};
  std::vector<int64_t> labels = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::map<std::string, std::string> attrs = {
      {"format", "mlai-images-1"},
      {"class_names", R"(["a","b","c","d","e","f","g","h","i","j"])"},
      {"mean", "[0.5]"},
      {"std", "[0.25]"}};
  bool num_classes = true;
  bool images = true;
};

void write_spec(const Spec& s, const std::string& path) {
  H5Writer w(path);
  for (const auto& [k, v] : s.attrs) w.set_attr("/", k, v);
  if (s.num_classes) w.set_attr("/", "num_classes", 10);
  int64_t n = 1;
  for (int64_t d : s.images_shape) n *= d;
  const std::vector<uint8_t> zeros(static_cast<size_t>(n) * 8 + 8, 0);
  if (s.images) w.write("images", s.images_dtype, s.images_shape, zeros.data());
  std::vector<int32_t> l32(s.labels.begin(), s.labels.end());
  w.write(
      "labels", s.labels_dtype, s.labels_shape,
      s.labels_dtype == H5Type::kInt32 ? static_cast<const void*>(l32.data()) : s.labels.data());
  w.commit();
}

TEST_F(H5DatasetErrorsTest, ValidSpecReads) {
  write_spec(Spec{}, path("ok.h5"));
  const auto d = mlai::io::read_h5_dataset(path("ok.h5"));
  EXPECT_EQ(d.count, 10);
  EXPECT_EQ(d.name, "hdf5");  // no name attribute: files from other tools need not have one
  EXPECT_EQ(d.class_names[9], "j");
}

TEST_F(H5DatasetErrorsTest, WrongShapesTypesAndMetadataAreOneLineErrors) {
  const std::vector<std::pair<std::function<void(Spec&)>, std::string>> cases = {
      {[](Spec& s) {
         s.images_shape = {10, 4, 4};
       },
       "'images' has shape 10 x 4 x 4, expected N x H x W x C"},
      {[](Spec& s) { s.images_dtype = H5Type::kFloat32; }, "'images' is float32, expected uint8"},
      {[](Spec& s) { s.labels_dtype = H5Type::kInt32; }, "'labels' is int32, expected int64"},
      {[](Spec& s) { s.labels_shape = {9}; }, "'labels' holds 9 labels but 'images' 10 images"},
      {[](Spec& s) {
         s.labels_shape = {10, 1};
       },
       "'labels' has shape 10 x 1, expected N"},
      {[](Spec& s) { s.labels[3] = 12; }, "label 12 at index 3 is outside [0, 10)"},
      {[](Spec& s) { s.labels[9] = -1; }, "label -1 at index 9 is outside [0, 10)"},
      {[](Spec& s) { s.attrs.erase("format"); }, "no 'format' attribute"},
      {[](Spec& s) { s.attrs["format"] = "mlai-images-2"; },
       "format is 'mlai-images-2', expected 'mlai-images-1'"},
      {[](Spec& s) { s.num_classes = false; }, "attribute 'num_classes' is missing"},
      {[](Spec& s) {
         s.attrs["num_classes"] = "ten";
         s.num_classes = false;
       },
       "'num_classes'"},
      {[](Spec& s) { s.attrs["class_names"] = "a,b,c"; },
       "attribute 'class_names' is not a JSON array of 10 strings: a,b,c"},
      {[](Spec& s) { s.attrs["class_names"] = R"(["a"])"; },
       "attribute 'class_names' is not a JSON array of 10 strings"},
      {[](Spec& s) { s.attrs["mean"] = "[0.5, 0.5]"; },
       "attribute 'mean' is not a JSON array of 1 numbers"},
      {[](Spec& s) { s.attrs["mean"] = R"(["x"])"; },
       "attribute 'mean' is not a JSON array of 1 numbers"},
      {[](Spec& s) { s.attrs["std"] = "[0]"; },
       "attribute 'std' holds 0, expected positive numbers"},
      {[](Spec& s) { s.attrs.erase("std"); }, "attribute 'std' is missing"},
      {[](Spec& s) { s.images = false; }, "no 'images' dataset"},
      {[](Spec& s) {
         s.images_shape = {0, 4, 4, 1};
         s.labels_shape = {0};
       },
       "'images' holds no images"},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    Spec s;
    cases[k].first(s);
    const std::string p = path("case" + std::to_string(k) + ".h5");
    write_spec(s, p);
    for (int via_reader = 0; via_reader < 2; ++via_reader) {
      const std::string msg = error_of([&] {
        if (via_reader) {
          mlai::io::H5ImageReader r(p);
        } else {
          mlai::io::read_h5_dataset(p);
        }
      });
      EXPECT_NE(msg.find(p), std::string::npos) << msg;
      EXPECT_NE(msg.find(cases[k].second), std::string::npos) << "case " << k << ": " << msg;
    }
  }
}

TEST_F(H5DatasetErrorsTest, CorruptAndTruncatedFilesAreRejected) {
  std::mt19937 rng(5);
  std::string junk(20000, '\0');
  for (char& c : junk) c = static_cast<char>(rng());
  std::ofstream(path("junk.h5"), std::ios::binary) << junk;
  std::string msg = error_of([&] { mlai::io::read_h5_dataset(path("junk.h5")); });
  EXPECT_NE(msg.find("cannot open " + path("junk.h5") + ": not a valid HDF5 file"),
            std::string::npos)
      << msg;
  msg = error_of([&] { mlai::io::read_h5_dataset(path("missing.h5")); });
  EXPECT_NE(msg.find(path("missing.h5") + ": no such file"), std::string::npos) << msg;

  const auto d = mlai::testing::random_dataset(300, 8, 8, 3);
  for (int level : {0, 5}) {
    const std::string good = path("good" + std::to_string(level) + ".h5");
    mlai::io::write_h5_dataset(d, good, "", level);
    const auto size = fs::file_size(good);
    for (uintmax_t keep : {uintmax_t{0}, uintmax_t{100}, uintmax_t{3000}, size / 2, size - 1}) {
      const std::string p = path("cut.h5");
      fs::copy_file(good, p, fs::copy_options::overwrite_existing);
      fs::resize_file(p, keep);
      msg = error_of([&] { mlai::io::read_h5_dataset(p); });
      EXPECT_NE(msg.find(p), std::string::npos) << keep << ": " << msg;
      EXPECT_THROW(mlai::io::H5ImageReader{p}, std::runtime_error) << keep;
    }
  }
}

TEST_F(H5DatasetErrorsTest, RowRangesOfChunkedDatasets) {
  const std::string p = path("rows.h5");
  std::vector<int32_t> v(10 * 3);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int32_t>(i);
  {
    H5Writer w(p);
    w.create("m", H5Type::kInt32, {10, 3}, {{4, 3}, 2});
    w.write_rows("m", H5Type::kInt32, 0, 4, v.data());
    w.write_rows("m", H5Type::kInt32, 6, 4, &v[18]);  // rows 4 and 5 stay unwritten: zero
    w.write("big_chunk", H5Type::kInt32, {2, 3}, v.data(), {{100, 100}, 0});  // clamped
    w.write("empty", H5Type::kInt32, {0, 3}, nullptr, {{64, 3}, 4});          // stays contiguous
    std::string msg = error_of([&] { w.write_rows("m", H5Type::kInt32, 8, 3, v.data()); });
    EXPECT_NE(msg.find("rows [8, 11) are outside its 10 rows"), std::string::npos) << msg;
    msg = error_of([&] { w.write_rows("m", H5Type::kFloat32, 0, 1, v.data()); });
    EXPECT_NE(msg.find("stored as int32, expected float32"), std::string::npos) << msg;
    msg = error_of([&] { w.write_rows("nope", H5Type::kInt32, 0, 1, v.data()); });
    EXPECT_NE(msg.find("no such dataset"), std::string::npos) << msg;
    msg = error_of([&] { w.create("x", H5Type::kInt32, {4}, {{}, 3}); });
    EXPECT_NE(msg.find("compression needs a chunk shape"), std::string::npos) << msg;
    msg = error_of([&] { w.create("y", H5Type::kInt32, {4, 2}, {{4}, 0}); });
    EXPECT_NE(msg.find("chunk shape has 1 dimensions, the data 2"), std::string::npos) << msg;
    msg = error_of([&] { w.create("z", H5Type::kInt32, {4}, {{4}, 11}); });
    EXPECT_NE(msg.find("gzip level must be in 0..9"), std::string::npos) << msg;
    w.commit();
  }
  H5Reader r(p);
  EXPECT_EQ(r.info("m").layout.chunk, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(r.info("m").layout.deflate, 2);
  EXPECT_EQ(r.info("big_chunk").layout.chunk, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(r.info("empty").layout.chunk.empty());
  std::vector<int32_t> got(12, -1);
  r.read_rows("m", H5Type::kInt32, 3, 4, got.data());
  EXPECT_EQ(got, (std::vector<int32_t>{9, 10, 11, 0, 0, 0, 0, 0, 0, 18, 19, 20}));
  r.read_rows("m", H5Type::kInt32, 10, 0, got.data());  // an empty range at the end is fine
  std::string msg = error_of([&] { r.read_rows("m", H5Type::kInt64, 0, 1, got.data()); });
  EXPECT_NE(msg.find("stored as int32, expected int64"), std::string::npos) << msg;
  msg = error_of([&] { r.read_rows("nope", H5Type::kInt32, 0, 1, got.data()); });
  EXPECT_NE(msg.find("'nope' from " + p + ": no such dataset"), std::string::npos) << msg;
}

}  // namespace
