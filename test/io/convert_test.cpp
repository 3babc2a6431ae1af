// End to end through the programs: mlai_convert packs a synthetic MNIST-format directory into
// HDF5 (the same bytes as the IDX reader gives), mlai_train trains from the packed files, and
// bad flags or missing data are one-line errors with exit codes 2 and 1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>

#include "../nn/synthetic_data.h"
#include "../run_program.h"
#include "dataset_test_util.h"
#include "io/h5dataset.h"

namespace fs = std::filesystem;

namespace {

using Result = mlai::testing::CliResult;
Result run(const std::string& program, const std::string& args) {
  return mlai::testing::run_program(program, args);
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

class ConvertTest : public mlai::testing::TempDirTest {};

TEST_F(ConvertTest, MnistRoundTripThenTrainFromHdf5) {
  const std::string src = mlai::testing::make_synthetic_mnist(path("mnist"), 640, 200);
  const std::string out = path("packed/mn");
  Result r =
      run("mlai_convert", "--from mnist --data-dir " + src + " --out " + out + " --compression 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + out + "-train.h5: 640 images, 28x28x1 uint8, 10 classes"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("wrote " + out + "-test.h5: 200 images"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: 2 files, 840 images"), std::string::npos) << r.out;
  for (const std::string split : {"train", "test"}) {
    const auto packed = mlai::io::read_h5_dataset(out + "-" + split + ".h5");
    const auto orig = mlai::io::load_split("mnist", src, split);
    EXPECT_EQ(packed.name, "mnist");
    EXPECT_EQ(packed.count, orig.count);
    EXPECT_TRUE(packed.images == orig.images) << split;
    EXPECT_EQ(packed.labels, orig.labels) << split;
    EXPECT_EQ(packed.class_names, orig.class_names);
    EXPECT_EQ(packed.mean, orig.mean);
    EXPECT_EQ(packed.std, orig.std);
    EXPECT_EQ(mlai::io::H5ImageReader(out + "-" + split + ".h5").source(),
              "mnist " + split + " (" + src + ")");
  }
  r = run("mlai_train",
          "--dataset hdf5 --data-path " + out +
              "-train.h5 --epochs 1 "
              "--limit-train-batches 3 --device cpu --no-progress --cache --log-dir " +
              path("logs"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("3 training batches"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(200 images)"), std::string::npos) << r.out;  // the sibling test file
  const fs::path hparams = path("logs/default/version_0/hparams.json");
  ASSERT_TRUE(fs::exists(hparams));
  std::ifstream f(hparams);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"data_path\": \"" + out + "-train.h5\""), std::string::npos);
  EXPECT_NE(text.find("\"cache\": true"), std::string::npos);
}

// CIFAR-100 end to end: packed with its 100 fine labels, and trained on directly (3 channels,
// 100 classes, crop-flip augmentation by default).
TEST_F(ConvertTest, Cifar100PacksAndTrains) {
  const std::string dir = path("c100");
  fs::create_directories(dir);
  auto write = [&](const std::string& file, int n) {
    std::ofstream f(dir + "/" + file, std::ios::binary);
    for (int r = 0; r < n; ++r) {
      f.put(static_cast<char>(r % 20));       // coarse
      f.put(static_cast<char>((r * 7) % 100));  // fine
      for (int k = 0; k < 3072; ++k) f.put(static_cast<char>((r * 31 + k * 5) % 256));
    }
  };
  write("train.bin", 160);
  write("test.bin", 40);
  Result r = run("mlai_convert", "--from cifar100 --data-dir " + dir + " --out " + path("c"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("160 images, 32x32x3 uint8, 100 classes"), std::string::npos) << r.out;
  const auto packed = mlai::io::read_h5_dataset(path("c") + "-train.h5");
  EXPECT_EQ(packed.name, "cifar100");
  EXPECT_EQ(packed.num_classes, 100);
  EXPECT_EQ(packed.labels[3], 21);
  r = run("mlai_train", "--dataset cifar100 --data-dir " + dir + " --log-dir " + path("logs") +
                            " --epochs 1 --batch-size 16 --device cpu --workers 1 --no-progress");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("(40 images)"), std::string::npos) << r.out;
  // 100 classes: the per-class table and the 100 x 100 matrix go to a file, not the terminal.
  EXPECT_EQ(r.out.find("test confusion matrix"), std::string::npos) << r.out;
  const std::string report = path("logs") + "/default/version_0/test_report.txt";
  EXPECT_NE(r.out.find(report), std::string::npos) << r.out;
  std::ifstream f(report);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("test confusion matrix"), std::string::npos);
  EXPECT_GT(std::count(text.begin(), text.end(), '\n'), 200);
  // Top-5 accuracy, shown for many classes and logged: never below top-1.
  EXPECT_NE(r.out.find("validation top-5: "), std::string::npos) << r.out;
  const size_t at = r.out.find("test top-5 accuracy: ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double top5 = std::stod(r.out.substr(at + 21));
  const double top1 = std::stod(r.out.substr(r.out.find("test accuracy: ") + 15));
  EXPECT_GE(top5, top1);
  std::ifstream csv(path("logs") + "/default/version_0/metrics.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_NE(header.find(",val_top5_accuracy,test_top5_accuracy"), std::string::npos) << header;
}

// Own images: a folder in torchvision's layout (train/ and val/, a class per subfolder, images
// of several sizes) packed at one size, then trained on.
TEST_F(ConvertTest, ImageFolderPacksResizesAndTrains) {
  std::mt19937 rng(4);
  for (const std::string split : {"train", "val"})
    for (const std::string cls : {"ants", "bees", "wasps"})
      for (int i = 0; i < (split == "train" ? 12 : 4); ++i) {
        const int h = 10 + static_cast<int>(rng() % 20), w = 10 + static_cast<int>(rng() % 20);
        std::vector<uint8_t> px(static_cast<size_t>(h * w * 3));
        for (auto& p : px) p = static_cast<uint8_t>(rng() & 0xff);
        mlai::testing::write_png(path("bugs/" + split + "/" + cls + "/" + std::to_string(i) + ".png"),
                                 h, w, 3, px);
      }
  Result r = run("mlai_convert", "--from folder --data-dir " + path("bugs") + " --size 16x12 --out " +
                                     path("p/bugs"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + path("p/bugs") + "-train.h5: 36 images, 16x12x3 uint8, 3 classes"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("-test.h5: 12 images, 16x12x3"), std::string::npos) << r.out;
  const auto d = mlai::io::read_h5_dataset(path("p/bugs-test.h5"));
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"ants", "bees", "wasps"}));
  EXPECT_EQ(d.name, "bugs");
  r = run("mlai_train", "--dataset hdf5 --data-path " + path("p/bugs-train.h5") +
                            " --fast-dev-run 2 --batch-size 8 --device cpu --workers 1");
  EXPECT_EQ(r.code, 0) << r.out;
  // Without --size the sizes differ: one line naming two of the files, exit 1.
  r = run("mlai_convert", "--from folder --data-dir " + path("bugs") + " --out " + path("q/bugs"));
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(lines(r.out), 1) << r.out;
  EXPECT_NE(r.out.find("--size"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(path("q/bugs-train.h5")));
  // A test folder of gray images of another size takes the training folder's colour and size.
  for (const std::string cls : {"ants", "bees"}) {
    mlai::testing::write_png(path("two/train/" + cls + "/1.png"), 8, 8, 3,
                             std::vector<uint8_t>(8 * 8 * 3, 90));
    mlai::testing::write_png(path("two/test/" + cls + "/1.png"), 5, 7, 1,
                             std::vector<uint8_t>(5 * 7, 30));
  }
  r = run("mlai_convert", "--from folder --data-dir " + path("two") + " --out " + path("t/two"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto test = mlai::io::read_h5_dataset(path("t/two-test.h5"));
  EXPECT_EQ(test.height, 8);
  EXPECT_EQ(test.width, 8);
  EXPECT_EQ(test.channels, 3);
  EXPECT_EQ(test.images[0], 30);  // gray 30 replicated, resized from a constant image
}

TEST_F(ConvertTest, OneSplitAndPlainProgressLines) {
  const std::string src = mlai::testing::make_synthetic_mnist(path("mnist"), 64, 9000);
  const Result r =
      run("mlai_convert", "--from mnist --data-dir " + src + " --split test --out " + path("t"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(path("t-train.h5")));
  EXPECT_EQ(mlai::io::read_h5_dataset(path("t-test.h5")).count, 9000);
  // Not a terminal: plain progress lines (4096 and 8192 of 9000), no carriage returns.
  EXPECT_NE(r.out.find("writing " + path("t-test.h5") + ": 4096/9000 images (45%)\n"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << r.out;
  const Result quiet = run("mlai_convert", "--from mnist --data-dir " + src +
                                               " --split test --no-progress --out " + path("q"));
  EXPECT_EQ(quiet.out.find("writing"), std::string::npos) << quiet.out;
}

TEST_F(ConvertTest, BadFlagsExitWithCode2AndOneLine) {
  const std::pair<std::string, std::string> cases[] = {
      {"--from imagenet --out x", "imagenet"},
      {"--from mnist --out x --compression 12", "--compression"},
      {"--from mnist", "--out"},
      {"--out x", "--from"},
      {"--from mnist --out x.h5", "drop '.h5'"},
      {"--from mnist --out x --split val", "--split"},
      {"--from mnist --out x --bogus", "bogus"},
      {"--from mnist --out x --size 32", "--size"},
      {"--from folder --out x", "--data-dir"},
      {"--from folder --data-dir d --out x --size 0x4", "--size"},
      {"--from folder --data-dir d --out x --size 3xq", "--size"},
      {"--from folder --data-dir d --out x --channels 2", "--channels"},
  };
  for (const auto& [args, needle] : cases) {
    const Result r = run("mlai_convert", args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_EQ(lines(r.out), 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
  const Result missing =
      run("mlai_convert", "--from cifar10 --data-dir " + path("none") + " --out " + path("c"));
  EXPECT_EQ(missing.code, 1) << missing.out;
  EXPECT_EQ(lines(missing.out), 1) << missing.out;
  EXPECT_NE(missing.out.find(path("none") + "/data_batch_1.bin"), std::string::npos) << missing.out;
  const Result help = run("mlai_convert", "--help");
  EXPECT_EQ(help.code, 0);
  for (const char* f :
       {"--from", "--data-dir", "--out", "--split", "--compression", "--size", "--channels"})
    EXPECT_NE(help.out.find(f), std::string::npos) << f;
}

TEST_F(ConvertTest, TrainFlagsForHdf5) {
  const std::pair<std::string, std::string> cases[] = {
      {"--dataset hdf5 --fast-dev-run", "--data-path"},
      {"--dataset mnist --data-path x.h5 --fast-dev-run", "--data-path"},
      {"--dataset hdf5 --data-path x.h5 --data-dir d --fast-dev-run", "--data-dir"},
  };
  for (const auto& [args, needle] : cases) {
    const Result r = run("mlai_train", args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_EQ(lines(r.out), 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
  const Result r = run(
      "mlai_train", "--dataset hdf5 --data-path " + path("no.h5") + " --fast-dev-run --device cpu");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(path("no.h5") + ": no such file"), std::string::npos) << r.out;
  const Result help = run("mlai_train", "--help");
  EXPECT_NE(help.out.find("--data-path"), std::string::npos);
  EXPECT_NE(help.out.find("--cache"), std::string::npos);
}

}  // namespace
