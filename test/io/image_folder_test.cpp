// Own images (io/image_decode, io/image_resize, io/image_folder): decoding and resizing give
// PIL's bytes (what torchvision's ImageFolder + Resize feed a model), folders are listed in
// torchvision's order, and packing writes the pixels, labels and statistics, with errors that
// name the file.
#include "io/image_folder.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "dataset_test_util.h"
#include "io/h5dataset.h"
#include "io/image_decode.h"
#include "io/image_resize.h"

namespace fs = std::filesystem;

namespace mlai::io {
namespace {

using testing::error_of;
using testing::write_png;

std::vector<uint8_t> noise(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(rng() & 0xff);
  return v;
}

class ImageFolderTest : public testing::TempDirTest {};

// PIL (test/io/pil_reference.py) decodes PNGs of nine kinds (a gAMA chunk, 16-bit colour,
// 1-bit gray and palettes among them) and JPEGs of two into RGB and L, and resizes them with
// BILINEAR to four sizes; mlai gives Pillow 13's bytes, every one. An older Pillow rounds some
// resized bytes the other way (the first GPU machine's: 169 of 840 bytes, each by 1), so with
// another major version the bound is 1 and decoding alone stays exact.
TEST_F(ImageFolderTest, DecodeAndResizeGivePilsBytes) {
  const std::string cmd = "python3 '" + std::string(MLAI_SOURCE_DIR) +
                          "/test/io/pil_reference.py' '" + dir_.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
    GTEST_SKIP() << "PIL is not installed for python3 (pip install pillow)";
  ASSERT_EQ(status, 0) << cmd;
  std::ifstream manifest(path("manifest.tsv"));
  std::string pillow;
  std::ifstream(path("pillow_version.txt")) >> pillow;
  const bool pillow13 = pillow.rfind("13.", 0) == 0;
  if (!pillow13) std::printf("Pillow %s, not 13: resized bytes may differ by 1\n", pillow.c_str());
  int cases = 0;
  for (std::string line; std::getline(manifest, line);) {
    std::istringstream f(line);
    std::string image, mode, ref_path;
    int64_t h = 0, w = 0;
    f >> image >> mode >> h >> w >> ref_path;
    const int c = mode == "RGB" ? 3 : 1;
    ImageInfo info;
    std::vector<uint8_t> got = decode_image(image, c, &info);
    got = resize_bilinear(got, info.height, info.width, c, h, w);
    std::ifstream r(ref_path, std::ios::binary);
    const std::vector<uint8_t> want((std::istreambuf_iterator<char>(r)),
                                    std::istreambuf_iterator<char>());
    ASSERT_EQ(got.size(), want.size()) << line;
    int64_t differ = 0, worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      differ += got[i] != want[i];
      worst = std::max<int64_t>(worst, std::abs(int(got[i]) - int(want[i])));
    }
    const bool resized = h != info.height || w != info.width;
    if (pillow13 || !resized)
      EXPECT_EQ(differ, 0) << line << ": " << differ << " of " << got.size()
                           << " bytes differ, by up to " << worst << " (Pillow " << pillow << ")";
    else
      EXPECT_LE(worst, 1) << line << ": " << differ << " of " << got.size()
                          << " bytes differ, by up to " << worst << " (Pillow " << pillow << ")";
    ++cases;
  }
  EXPECT_EQ(cases, 11 * 2 * 5);
}

TEST_F(ImageFolderTest, ResizeKeepsConstantsAndLinearRampsAndIsIdentityAtTheSameSize) {
  const std::vector<uint8_t> flat(20 * 30 * 3, 77);
  for (auto [h, w] : {std::pair{7, 9}, std::pair{45, 61}, std::pair{1, 1}}) {
    const auto out = resize_bilinear(flat, 20, 30, 3, h, w);
    EXPECT_EQ(out, std::vector<uint8_t>(static_cast<size_t>(h * w * 3), 77));
  }
  const std::vector<uint8_t> img = noise(13 * 17 * 3, 1);
  EXPECT_EQ(resize_bilinear(img, 13, 17, 3, 13, 17), img);
  // A horizontal ramp 0, 2, 4, ... halved in width: away from the borders each output is the
  // mean of the ramp over its footprint, the value at its centre.
  std::vector<uint8_t> ramp(64);
  for (int x = 0; x < 64; ++x) ramp[x] = static_cast<uint8_t>(2 * x);
  const auto half = resize_bilinear(ramp, 1, 64, 1, 1, 32);
  for (int o = 2; o < 30; ++o) EXPECT_NEAR(half[o], 2 * (2 * o + 0.5), 0.51) << o;
}

TEST_F(ImageFolderTest, ScanFollowsTorchvisionsOrder) {
  const std::vector<uint8_t> px(4 * 4, 9);
  for (const char* f : {"root/b_dogs/z.png", "root/b_dogs/a.PNG", "root/b_dogs/sub/c.png",
                        "root/a_cats/x.png", "root/.cache/y.png", "root/a_cats/.hidden.png"})
    write_png(path(f), 4, 4, 1, px);
  std::ofstream(path("root/a_cats/readme.txt")) << "not an image";
  const ImageFolder f = scan_image_folder(path("root"));
  EXPECT_EQ(f.class_names, (std::vector<std::string>{"a_cats", "b_dogs"}));
  EXPECT_EQ(f.files,
            (std::vector<std::string>{path("root/a_cats/x.png"), path("root/b_dogs/a.PNG"),
                                      path("root/b_dogs/z.png"), path("root/b_dogs/sub/c.png")}));
  EXPECT_EQ(f.labels, (std::vector<int64_t>{0, 1, 1, 1}));
  EXPECT_EQ(f.skipped, (std::vector<std::string>{path("root/a_cats/readme.txt")}));
  // A test split takes the training split's classes: the labels are positions in them.
  write_png(path("test/b_dogs/q.png"), 4, 4, 1, px);
  const ImageFolder t = scan_image_folder(path("test"), {"a_cats", "b_dogs"});
  EXPECT_EQ(t.labels, (std::vector<int64_t>{1}));
  EXPECT_EQ(t.class_names.size(), 2u);
  write_png(path("test/zebras/q.png"), 4, 4, 1, px);
  EXPECT_NE(error_of([&] {
              scan_image_folder(path("test"), {"a_cats", "b_dogs"});
            }).find("class 'zebras' is not one of the training set's classes"),
            std::string::npos);
  fs::create_directories(path("root/c_empty"));
  EXPECT_NE(error_of([&] {
              scan_image_folder(path("root"));
            }).find("class folder 'c_empty' holds no .png, .jpg or .jpeg files"),
            std::string::npos);
  fs::create_directories(path("bare"));
  EXPECT_NE(error_of([&] { scan_image_folder(path("bare")); }).find("has no class folders"),
            std::string::npos);
  // Splits: DIR/train with DIR/val (or DIR/test), or DIR alone.
  fs::create_directories(path("ds/train"));
  fs::create_directories(path("ds/val"));
  EXPECT_EQ(image_folder_splits(path("ds")).test, path("ds/val"));
  EXPECT_EQ(image_folder_splits(path("root")).train, path("root"));
  EXPECT_EQ(image_folder_splits(path("root")).test, "");
}

TEST_F(ImageFolderTest, PackWritesPixelsLabelsAndStatistics) {
  // Six gray images and one colour one: packed in colour (the gray ones replicated).
  std::vector<std::vector<uint8_t>> gray;
  for (int i = 0; i < 6; ++i) {
    gray.push_back(noise(8 * 6, 10 + i));
    write_png(path("f/" + std::string(i < 3 ? "one" : "two") + "/" + std::to_string(i) + ".png"), 8,
              6, 1, gray.back());
  }
  const std::vector<uint8_t> colour = noise(8 * 6 * 3, 99);
  write_png(path("f/two/9.png"), 8, 6, 3, colour);
  const ImageFolder f = scan_image_folder(path("f"));
  const Dataset header = pack_image_folder(f, path("f.h5"), {}, "mine");
  const Dataset d = read_h5_dataset(path("f.h5"));
  EXPECT_EQ(d.name, "mine");
  EXPECT_EQ(d.count, 7);
  EXPECT_EQ(d.height, 8);
  EXPECT_EQ(d.width, 6);
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1}));
  double sum[3] = {0, 0, 0}, squares[3] = {0, 0, 0};
  for (int i = 0; i < 7; ++i)
    for (int p = 0; p < 48; ++p)
      for (int c = 0; c < 3; ++c) {
        const uint8_t want = i < 6 ? gray[i][p] : colour[p * 3 + c];
        ASSERT_EQ(d.images[(i * 48 + p) * 3 + c], want) << i << " " << p << " " << c;
        sum[c] += want / 255.0;
        squares[c] += (want / 255.0) * (want / 255.0);
      }
  for (int c = 0; c < 3; ++c) {
    const double mean = sum[c] / (7 * 48);
    EXPECT_NEAR(d.mean[c], mean, 1e-5);
    EXPECT_NEAR(d.std[c], std::sqrt(squares[c] / (7 * 48) - mean * mean), 1e-5);
    EXPECT_EQ(header.mean[c], d.mean[c]);
  }
  // Gray only: one channel. Resized on request, as resize_bilinear does it.
  fs::remove(path("f/two/9.png"));
  PackOptions small;
  small.height = 3, small.width = 5;
  pack_image_folder(scan_image_folder(path("f")), path("g.h5"), small, "mine");
  const Dataset g = read_h5_dataset(path("g.h5"));
  EXPECT_EQ(g.channels, 1);
  EXPECT_EQ(g.count, 6);
  EXPECT_EQ(std::vector<uint8_t>(g.images.begin(), g.images.begin() + 15),
            resize_bilinear(gray[0], 8, 6, 1, 3, 5));
}

TEST_F(ImageFolderTest, MixedSizesAndBrokenFilesAreNamed) {
  write_png(path("f/a/1.png"), 8, 6, 1, noise(48, 1));
  write_png(path("f/a/2.png"), 5, 6, 1, noise(30, 2));
  std::string msg =
      error_of([&] { pack_image_folder(scan_image_folder(path("f")), path("x.h5"), {}, "x"); });
  EXPECT_NE(msg.find(path("f/a/2.png") + " is 5x6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--size"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path("x.h5")));
  std::ofstream(path("f/a/3.png")) << "this is not a PNG";
  PackOptions o;
  o.height = o.width = 4, o.channels = 1;
  msg = error_of([&] { pack_image_folder(scan_image_folder(path("f")), path("x.h5"), o, "x"); });
  EXPECT_NE(msg.find("cannot read image " + path("f/a/3.png") + ": not a PNG or JPEG file"),
            std::string::npos)
      << msg;
  EXPECT_FALSE(fs::exists(path("x.h5")));  // nothing half-written
  std::ofstream(path("f/a/3.png"), std::ios::binary) << "\x89PNG\r\n\x1a\n truncated";
  msg = error_of([&] { pack_image_folder(scan_image_folder(path("f")), path("x.h5"), o, "x"); });
  EXPECT_NE(msg.find(path("f/a/3.png") + ": PNG:"), std::string::npos) << msg;
  // A 16-bit grayscale PNG: refused (PIL clips it to 255), named.
  {
    png_image img;
    std::memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width = 6, img.height = 8;
    img.format = PNG_FORMAT_LINEAR_Y;  // 16-bit gray
    const std::vector<uint16_t> deep(48, 1000);
    ASSERT_NE(png_image_write_to_file(&img, path("f/a/3.png").c_str(), 0, deep.data(), 0, nullptr),
              0);
  }
  msg = error_of([&] { pack_image_folder(scan_image_folder(path("f")), path("x.h5"), o, "x"); });
  EXPECT_NE(msg.find(path("f/a/3.png") + ": a 16-bit grayscale PNG"), std::string::npos) << msg;
}

// --dataset folder reads each image when asked, decoded and resized as packing does: the same
// bytes, labels, classes and statistics as the packed files of the same folders, streamed or
// read whole (--cache); the test split takes the training split's size and statistics.
TEST_F(ImageFolderTest, FolderDataSetReadsWhatPackingWrites) {
  for (int i = 0; i < 5; ++i)  // training images: 8x6, gray and colour
    write_png(path("d/train/" + std::string(i < 2 ? "cat" : "dog") + "/" + std::to_string(i) +
                   ".png"),
              8, 6, i == 4 ? 3 : 1, noise(i == 4 ? 144 : 48, 40 + i));
  write_png(path("d/val/cat/a.png"), 10, 10, 3, noise(300, 50));  // another size: resized
  write_png(path("d/val/dog/b.png"), 8, 6, 1, noise(48, 51));
  std::ofstream(path("d/train/dog/notes.txt")) << "not an image";
  FolderOptions o;
  o.height = 5, o.width = 4;
  const DataSplits s = load_dataset("folder", path("d"), 0.0, 1, "", false, o);
  PackOptions po;
  po.height = 5, po.width = 4;
  const ImageFolder train = scan_image_folder(path("d/train"));
  po = resolve_pack_options(train, po);
  ASSERT_EQ(po.channels, 3);
  pack_image_folder(train, path("p-train.h5"), po, "d");
  pack_image_folder(scan_image_folder(path("d/val"), train.class_names), path("p-test.h5"), po,
                    "d");
  const Dataset want_train = read_h5_dataset(path("p-train.h5"));
  const Dataset want_test = read_h5_dataset(path("p-test.h5"));
  auto expect_same = [](const Dataset& got, const Dataset& want, const char* what) {
    ASSERT_EQ(got.count, want.count) << what;
    EXPECT_EQ(got.height, 5);
    EXPECT_EQ(got.width, 4);
    EXPECT_EQ(got.channels, 3);
    EXPECT_EQ(got.labels, want.labels) << what;
    EXPECT_EQ(got.class_names, want.class_names) << what;
    std::vector<uint8_t> px(static_cast<size_t>(got.sample_bytes()));
    for (int64_t i = 0; i < got.count; ++i) {
      const uint8_t* p = nullptr;
      if (got.source) {
        EXPECT_EQ(got.source->read(got.source_row(i), px.data()), want.labels[i]);
        p = px.data();
      } else {
        p = &got.images[static_cast<size_t>(i * got.sample_bytes())];
      }
      EXPECT_EQ(std::vector<uint8_t>(p, p + got.sample_bytes()),
                std::vector<uint8_t>(want.images.begin() + i * got.sample_bytes(),
                                     want.images.begin() + (i + 1) * got.sample_bytes()))
          << what << " image " << i;
    }
  };
  ASSERT_TRUE(s.train.source);  // streamed: nothing decoded up front but the statistics
  EXPECT_TRUE(s.train.images.empty());
  expect_same(s.train, want_train, "train");
  expect_same(s.test, want_test, "test");
  EXPECT_EQ(s.train.mean, want_train.mean);  // every training image (5 <= the sample size)
  EXPECT_EQ(s.train.std, want_train.std);
  EXPECT_EQ(s.test.mean, want_train.mean);   // the test split normalized as training images
  EXPECT_EQ(s.test.std, want_train.std);
  ASSERT_EQ(s.notes.size(), 1u);
  EXPECT_NE(s.notes[0].find("5 training and 2 test images in 2 classes, read as 5x4x3"),
            std::string::npos)
      << s.notes[0];
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_NE(s.warnings[0].find("notes.txt"), std::string::npos) << s.warnings[0];
  // --cache: decoded once into memory, the same bytes.
  const DataSplits c = load_dataset("folder", path("d"), 0.0, 1, "", true, o);
  EXPECT_FALSE(c.train.source);
  expect_same(c.train, want_train, "cached train");
  expect_same(c.test, want_test, "cached test");
  // A validation split draws rows of the streamed set.
  const DataSplits v = load_dataset("folder", path("d"), 0.4, 1, "", false, o);
  EXPECT_EQ(v.train.count + v.val.count, 5);
  EXPECT_EQ(v.val.count, 2);
  std::vector<uint8_t> px(static_cast<size_t>(v.val.sample_bytes()));
  for (int64_t i = 0; i < v.val.count; ++i) {
    const int64_t row = v.val.source_row(i);
    EXPECT_EQ(v.val.source->read(row, px.data()), want_train.labels[row]);
    EXPECT_EQ(px, std::vector<uint8_t>(want_train.images.begin() + row * 60,
                                       want_train.images.begin() + (row + 1) * 60));
  }
  // Statistics from a sample: the same sample in every load, so the same values.
  o.stats_images = 2;
  const DataSplits a = load_dataset("folder", path("d"), 0.0, 1, "", false, o);
  const DataSplits b = load_dataset("folder", path("d"), 0.0, 7, "", false, o);
  EXPECT_EQ(a.train.mean, b.train.mean);
  EXPECT_NE(a.train.mean, want_train.mean);
  EXPECT_NE(a.notes[0].find("statistics from 2 training images"), std::string::npos);
}

TEST_F(ImageFolderTest, FolderDataSetErrorsNameTheFileAndTheFlag) {
  EXPECT_NE(error_of([&] { load_dataset("folder", "", 0.0, 1); }).find("--data-dir"),
            std::string::npos);
  write_png(path("d/a/1.png"), 8, 6, 1, noise(48, 1));
  write_png(path("d/b/2.png"), 5, 6, 1, noise(30, 2));
  const std::string msg = error_of([&] { load_dataset("folder", path("d"), 0.0, 1); });
  EXPECT_NE(msg.find(path("d/b/2.png") + " is 5x6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("give --image-size HxW"), std::string::npos) << msg;
  // A file broken after the start is found when it is read (by a loader worker): the error
  // names it.
  write_png(path("d/b/3.png"), 5, 6, 1, noise(30, 3));
  FolderOptions o;
  o.height = o.width = 4, o.channels = 1;
  const DataSplits s = load_dataset("folder", path("d"), 0.0, 1, "", false, o);
  ASSERT_EQ(s.train.count, 3);
  std::ofstream(path("d/b/3.png")) << "this is not a PNG";
  std::vector<uint8_t> px(16);
  EXPECT_NE(error_of([&] { s.train.source->read(2, px.data()); })
                .find("cannot read image " + path("d/b/3.png")),
            std::string::npos);
  // Read whole (--cache), the load itself fails, naming it.
  EXPECT_NE(error_of([&] { load_dataset("folder", path("d"), 0.0, 1, "", true, o); })
                .find(path("d/b/3.png")),
            std::string::npos);
}

}  // namespace
}  // namespace mlai::io
