// CIFAR-10 and CIFAR-100, binary versions (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz):
// runs of fixed-size records, each its label byte(s), then 32x32 R, G and B planes. CIFAR-10:
// data_batch_1..5.bin and test_batch.bin, 3073-byte records with one label. CIFAR-100:
// train.bin and test.bin, 3074-byte records with the coarse (0..19) then the fine label (0..99);
// mlai trains on the fine labels, as torchvision's CIFAR100 does. Or the Python versions, the
// folders torchvision's CIFAR10/CIFAR100(download=True) leave (cifar-10-batches-py/data_batch_1
// .. 5, test_batch, batches.meta; cifar-100-python/train, test, meta): pickled dicts of a uint8
// N x 3072 array of the same planar rows and a list of labels (io/pickle.h reads them), class
// names from the metadata. Read into a Dataset (NHWC uint8, int64 labels) with strict size and
// label checks.
#pragma once

#include <string>
#include <vector>

#include "io/dataset.h"

namespace mlai::io {

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixelBytes = 3 * kCifarSide * kCifarSide;  // 3072

// The files of `split` ("train" or "test") of `name` ("cifar10" or "cifar100") in `dir` or in
// the subfolder its tarball unpacks to (cifar-10-batches-bin/, cifar-100-binary/), else the
// Python version's in `dir` or its subfolder (cifar-10-batches-py/, cifar-100-python/). Throws
// listing every path tried when none is there, and naming a missing file of a partial set.
std::vector<std::string> find_cifar_files(const std::string& name, const std::string& dir,
                                          const std::string& split);

// Reads and concatenates the files, planes interleaved into NHWC, with class names (CIFAR-100's
// from fine_label_names.txt beside the files when it is there, else "0".."99") and the
// normalization statistics. Throws naming the file on a size that is zero or not a whole
// number of records, and the file and record on a label out of range.
Dataset read_cifar(const std::string& name, const std::vector<std::string>& files);

// find_cifar_files + read_cifar.
Dataset load_cifar(const std::string& name, const std::string& dir, const std::string& split);

}  // namespace mlai::io
