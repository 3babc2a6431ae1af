// CIFAR-10, binary version (cifar-10-binary.tar.gz): data_batch_1..5.bin (train) and
// test_batch.bin (test), each a run of 3073-byte records: a label byte, then 32x32 R, G and B
// planes. Read into a Dataset (NHWC uint8, int64 labels) with strict size and label checks.
#pragma once

#include <string>
#include <vector>

#include "io/dataset.h"

namespace mlai::io {

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarRecordBytes = 1 + 3 * kCifarSide * kCifarSide;  // 3073

// The batch files of `split` ("train" or "test") in `dir` or in its cifar-10-batches-bin/
// subfolder (where the tarball unpacks). Throws listing every path tried when one is missing.
std::vector<std::string> find_cifar10_files(const std::string& dir, const std::string& split);

// Reads and concatenates batch files, planes interleaved into NHWC. Throws naming the file on a
// size that is zero or not a multiple of 3073 bytes, and the file and record on a label > 9.
Dataset read_cifar10(const std::vector<std::string>& files);

// find_cifar10_files + read_cifar10, with class names and normalization statistics.
Dataset load_cifar10(const std::string& dir, const std::string& split);

}  // namespace mlai::io
