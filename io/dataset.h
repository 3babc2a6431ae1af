// Image classification datasets in memory: uint8 NHWC pixels and int64 labels, with class
// names and per-channel normalization statistics. Datasets are created by name from a data
// directory (fashion-mnist, mnist, cifar10, cifar100, stl10, svhn), a packed HDF5 file (hdf5)
// or a folder of image files (folder), with a seeded train/validation split and the test set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlai::io {

// Where sample pixels come from when they are not held in memory (a reader of a file): it
// writes sample i's pixels and returns its label; its errors name the file.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  virtual int64_t read(int64_t i, uint8_t* pixels) const = 0;
};

struct Dataset {
  std::string name;
  int64_t count = 0, height = 0, width = 0, channels = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;  // count * height * width * channels
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
  std::vector<float> mean, std;  // per channel, on the [0, 1] scale
  // Streaming: pixels are read on demand from `source` (images stays empty); sample i is the
  // source's sample rows[i] (all of them in order when rows is empty). Labels are in memory.
  std::shared_ptr<const SampleSource> source;
  std::vector<int64_t> rows;
  int64_t source_row(int64_t i) const { return rows.empty() ? i : rows[static_cast<size_t>(i)]; }
  int64_t sample_bytes() const { return height * width * channels; }
};

struct DataSplits {
  Dataset train, val, test;  // val is empty when val_split == 0; test when hdf5 has no test file
  std::vector<std::string> warnings;  // for the caller to print once (e.g. "no test set: ...")
  std::vector<std::string> notes;     // plain information, to print once (folder: the statistics)
};

// --dataset folder (an ImageFolder tree in `dir`, see io/image_folder.h): the size every image
// is resized to (0: the size they all share) and the channels (1 or 3; 0: 3 if any image is in
// colour), and how many training images, at most, the normalization statistics are measured on.
constexpr int64_t kFolderStatsImages = 1000;
struct FolderOptions {
  int64_t height = 0, width = 0;
  int channels = 0;
  int64_t stats_images = kFolderStatsImages;
};

std::vector<std::string> dataset_names();  // the names load_dataset accepts
std::string default_data_dir(const std::string& name);
// Loads `name` from `dir` (default_data_dir when empty), or for "hdf5" from `data_path` (see
// hdf5_paths). val_split in [0, 1): that fraction of the training set, drawn with `seed`,
// becomes the validation set. IDX and CIFAR files are read whole into memory; an hdf5 file
// is too with `cache`, and otherwise streamed (samples read on demand by the loader's workers).
// "folder" reads the image files in `dir` (which it needs) as the loader asks for them, shaped
// by `folder`.
DataSplits load_dataset(const std::string& name, const std::string& dir, double val_split,
                        uint64_t seed, const std::string& data_path = "", bool cache = true,
                        const FolderOptions& folder = {});

// One whole split ("train" or "test") of a dataset in its original files (fashion-mnist, mnist,
// cifar10, cifar100, stl10, svhn), from `dir` (default_data_dir when empty): what mlai_convert packs.
Dataset load_split(const std::string& name, const std::string& dir, const std::string& split);

// --data-path for hdf5: "TRAIN.h5,TEST.h5" names both files (the test file must exist);
// "TRAIN.h5" alone takes its test set from the same name with the file name's last "train"
// replaced by "test" (fmnist-train.h5 -> fmnist-test.h5) when that file exists, and has no
// test set otherwise (a file name without "train" has none either).
struct Hdf5Paths {
  std::string train, test;  // test: "" when there is none to look for
  bool test_required = false;
};
Hdf5Paths hdf5_paths(const std::string& data_path);

// The samples at `indices`, in that order.
Dataset subset(const Dataset& d, const std::vector<int64_t>& indices);

// A seeded permutation of [0, n): the same on every machine and rank (splitmix-based
// Fisher-Yates, no std::shuffle whose algorithm varies by library).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

}  // namespace mlai::io
