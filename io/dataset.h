// Image classification datasets in memory: uint8 NHWC pixels and int64 labels, with class
// names and per-channel normalization statistics. Datasets are created by name from a data
// directory (fashion-mnist, mnist), with a seeded train/validation split and the official test set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

struct Dataset {
  std::string name;
  int64_t count = 0, height = 0, width = 0, channels = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;  // count * height * width * channels
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
  std::vector<float> mean, std;  // per channel, on the [0, 1] scale
  int64_t sample_bytes() const { return height * width * channels; }
};

struct DataSplits {
  Dataset train, val, test;  // val is empty when val_split == 0
};

std::vector<std::string> dataset_names();  // the names load_dataset accepts
std::string default_data_dir(const std::string& name);
// Loads `name` from `dir` (default_data_dir when empty). val_split in [0, 1): that fraction of
// the training set, drawn with `seed`, becomes the validation set.
DataSplits load_dataset(const std::string& name, const std::string& dir, double val_split,
                        uint64_t seed);

// The samples at `indices`, in that order.
Dataset subset(const Dataset& d, const std::vector<int64_t>& indices);

// A seeded permutation of [0, n): the same on every machine and rank (splitmix-based
// Fisher-Yates, no std::shuffle whose algorithm varies by library).
std::vector<int64_t> permutation(int64_t n, uint64_t seed);

}  // namespace mlai::io
