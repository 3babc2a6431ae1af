// IDX files (MNIST, Fashion-MNIST): uint8 arrays with a big-endian header, plain or gzipped.
// read_idx validates magic, dims and exact size; load_idx_pair loads an images+labels pair;
// find_idx_files locates <split>-images-idx3-ubyte[.gz] and its labels in a dataset directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<uint8_t> data;  // row-major, product(dims) bytes
};

// Reads a uint8 IDX file (magic 0x0000080N with N == expected_ndim). Gzip is detected by the
// magic bytes 1f 8b, not by the file name. Throws std::runtime_error naming the file on a
// missing file, wrong magic, zero dim, truncated data or trailing bytes.
IdxArray read_idx(const std::string& path, int expected_ndim);

// Images in NHWC order (IDX images have one channel) with labels widened to int64.
struct ImageSet {
  int64_t count = 0, rows = 0, cols = 0, channels = 0;
  std::vector<uint8_t> images;  // count * rows * cols * channels
  std::vector<int64_t> labels;  // count, each in [0, num_classes)
};

// Loads a 3-D images file and a 1-D labels file; throws if the counts differ or a label is
// >= num_classes (naming the labels file and the index).
ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path,
                       int num_classes);

struct IdxFiles {
  std::string images, labels;
};

// Finds `<dir>/<split>-images-idx3-ubyte` and `<dir>/<split>-labels-idx1-ubyte`, each plain or
// with `.gz` (plain preferred). split is "train" or "t10k" (MNIST's names). Throws listing
// every path tried when one is missing.
IdxFiles find_idx_files(const std::string& dir, const std::string& split);

}  // namespace mlai::io
