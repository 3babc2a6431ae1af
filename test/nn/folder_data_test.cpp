// Training on image files as they are (--dataset folder) and with normalization given on the
// command line (--mean/--std), through the Trainer.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "../io/dataset_test_util.h"
#include "io/dataset.h"
#include "io/h5dataset.h"
#include "io/image_folder.h"
#include "nn/checkpoint.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

// The synthetic MNIST-format set as PNG files in ImageFolder's layout: DIR/{train,test}/<digit>/.
void write_as_folder(const std::string& data_dir, const std::string& dir) {
  const io::DataSplits s = io::load_dataset("mnist", data_dir, 0.0, 1);
  for (const auto& [split, d] : {std::pair{"train", &s.train}, std::pair{"test", &s.test}}) {
    const int64_t b = d->sample_bytes();
    for (int64_t i = 0; i < d->count; ++i)
      testing::write_png(dir + "/" + split + "/" + std::to_string(d->labels[static_cast<size_t>(i)]) +
                             "/" + std::to_string(i) + ".png",
                         d->height, d->width, 1,
                         std::vector<uint8_t>(d->images.begin() + i * b,
                                              d->images.begin() + (i + 1) * b));
  }
}

// The same images as files, decoded by the loader's workers each epoch (or once with --cache),
// train to the same weights as their packed HDF5 files: the same bytes, labels, validation
// split and normalization statistics reach the model.
TEST_F(TrainerTest, FolderTrainsAsItsPackedFiles) {
  const std::string dir = root + "/images";
  write_as_folder(root + "/data", dir);
  Config folder = base();
  folder.dataset = "folder";
  folder.data_dir = dir;
  Trainer from_files(folder);
  const FitResult r = from_files.fit();
  EXPECT_GT(r.test.confusion.accuracy(), 0.8);
  EXPECT_EQ(r.test.samples, 200);

  const io::ImageFolder train = io::scan_image_folder(dir + "/train");
  io::pack_image_folder(train, root + "/p-train.h5", {}, "images");
  io::pack_image_folder(io::scan_image_folder(dir + "/test", train.class_names),
                        root + "/p-test.h5", {}, "images");
  Config packed = base();
  packed.dataset = "hdf5";
  packed.data_dir = "";
  packed.data_path = root + "/p-train.h5";
  Trainer from_h5(packed);
  const FitResult rp = from_h5.fit();
  EXPECT_EQ(weights(from_files), weights(from_h5));
  EXPECT_EQ(r.test.loss, rp.test.loss);

  Config cached = folder;
  cached.cache = true;
  Trainer from_memory(cached);
  from_memory.fit();
  EXPECT_EQ(weights(from_files), weights(from_memory));

  // The run's checkpoint records the folder's statistics, for mlai_predict.
  DataInfo info;
  ASSERT_TRUE(checkpoint_data(r.version_dir + "/checkpoints/last.h5", &info));
  EXPECT_EQ(info.mean, io::read_h5_dataset(root + "/p-train.h5").mean);
  EXPECT_EQ(info.height, 28);
}

// --mean/--std replace the data set's statistics: training sees them (other weights than the
// default run), checkpoints record them; a count that is not the channels' is one error.
TEST_F(TrainerTest, MeanAndStdReplaceTheDataSetsStatistics) {
  Config c = base();
  c.epochs = 1;
  Trainer plain(c);
  plain.fit();
  c.mean = {0.5};
  c.std = {0.25};
  c.experiment_name = "normalized";
  Trainer given(c);
  const FitResult r = given.fit();
  EXPECT_NE(weights(plain), weights(given));
  DataInfo info;
  ASSERT_TRUE(checkpoint_data(r.version_dir + "/checkpoints/last.h5", &info));
  EXPECT_EQ(info.mean, std::vector<float>{0.5f});
  EXPECT_EQ(info.std, std::vector<float>{0.25f});

  Config three = c;
  three.mean = {0.485, 0.456, 0.406};
  three.std = {0.229, 0.224, 0.225};
  const std::string msg = testing::error_of([&] { Trainer t(three); });
  EXPECT_NE(msg.find("--mean/--std: 3 value(s) each, but the data set's images have 1 channel(s)"),
            std::string::npos)
      << msg;
  Config alone = c;
  alone.std.clear();
  EXPECT_NE(testing::error_of([&] { alone.validate(); }).find("--mean and --std go together"),
            std::string::npos);
  Config negative = c;
  negative.std = {-1};
  EXPECT_NE(testing::error_of([&] { negative.validate(); }).find("--std values must be > 0"),
            std::string::npos);
  Config sized = c;
  sized.image_size = "32";
  EXPECT_NE(testing::error_of([&] { sized.validate(); })
                .find("--image-size and --image-channels apply to --dataset folder only"),
            std::string::npos);
  sized.dataset = "folder";
  sized.data_dir = root;
  sized.image_size = "32x0";
  EXPECT_NE(testing::error_of([&] { sized.validate(); }).find("--image-size must be HxW or N"),
            std::string::npos);
}

// The hint printed when the loader holds training up: only above 10% of the time waiting, and
// only with something to try.
TEST(LoaderHint, SaysWhatToTryWhenBatchesAreLate) {
  EXPECT_EQ(loader_hint(0.05, 2, 16, "folder", false), "");
  const std::string h = loader_hint(0.35, 2, 16, "folder", false);
  EXPECT_NE(h.find("35%"), std::string::npos) << h;
  EXPECT_NE(h.find("with --workers 2"), std::string::npos) << h;
  EXPECT_NE(h.find("more --workers (this rank may use 16 CPUs)"), std::string::npos) << h;
  EXPECT_NE(h.find("--cache"), std::string::npos) << h;
  EXPECT_EQ(loader_hint(0.35, 16, 16, "mnist", false), "");  // nothing left to try
  EXPECT_EQ(loader_hint(0.35, 16, 16, "folder", true), "");
  const std::string h5 = loader_hint(0.5, 4, 4, "hdf5", false);
  EXPECT_EQ(h5.find("more --workers"), std::string::npos) << h5;
  EXPECT_NE(h5.find("--cache (read the file into memory once)"), std::string::npos) << h5;
  EXPECT_NE(loader_hint(0.2, 0, 8, "cifar10", false).find("0 loads every batch"),
            std::string::npos);
  // Automatic augmentation in the CPU workers: a lighter policy, even with no workers to add.
  const std::string aug = loader_hint(0.6, 2, 2, "mnist", false, "augmix");
  EXPECT_NE(aug.find("a lighter --auto-augment than augmix"), std::string::npos) << aug;
  EXPECT_NE(loader_hint(0.6, 2, 2, "mnist", false, "ra").find("--auto-augment none"),
            std::string::npos);
  EXPECT_EQ(loader_hint(0.6, 2, 2, "mnist", false, "none"), "");
}

}  // namespace
}  // namespace mlai::nn
