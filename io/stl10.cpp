// STL-10 reader: locate the split's two files, check their sizes and labels, and turn each
// image's column-major planes into interleaved NHWC pixels.
#include "io/stl10.h"

#include "io/read_file.h"

#include <filesystem>
#include <stdexcept>
#include <utility>
#include <vector>

namespace mlai::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

std::vector<std::string> class_names(const std::string& folder) {
  std::vector<std::string> names = read_name_lines((fs::path(folder) / "class_names.txt").string());
  if (names.size() == 10) return names;
  return {"airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"};
}

}  // namespace

std::pair<std::string, std::string> find_stl10_files(const std::string& dir,
                                                     const std::string& split) {
  if (split != "train" && split != "test")
    throw std::invalid_argument("STL-10 split must be train or test, got '" + split + "'");
  const std::string x = split + "_X.bin", y = split + "_y.bin";
  std::string tried;
  for (const fs::path& base : {fs::path(dir), fs::path(dir) / "stl10_binary"}) {
    tried += (tried.empty() ? "" : ", ") + (base / x).string();
    if (!fs::is_regular_file(base / x)) continue;
    if (!fs::is_regular_file(base / y))
      throw std::runtime_error("cannot find STL-10 " + split + " labels " + (base / y).string() +
                               " (beside " + x + ")");
    return {(base / x).string(), (base / y).string()};
  }
  throw std::runtime_error("cannot find the STL-10 " + split + " files (tried " + tried +
                           "; expected stl10_binary.tar.gz unpacked, or the folder "
                           "torchvision's STL10(root, download=True) leaves)");
}

Dataset read_stl10(const std::string& images_file, const std::string& labels_file) {
  const std::vector<uint8_t> raw = read_file_bytes(images_file);
  if (raw.empty() || raw.size() % kStl10ImageBytes != 0)
    fail(images_file, "size " + std::to_string(raw.size()) + " is not a whole number of " +
                          std::to_string(kStl10ImageBytes) + "-byte 96x96x3 images");
  const int64_t n = static_cast<int64_t>(raw.size()) / kStl10ImageBytes;
  const std::vector<uint8_t> y = read_file_bytes(labels_file);
  if (static_cast<int64_t>(y.size()) != n)
    fail(labels_file, std::to_string(y.size()) + " labels for the " + std::to_string(n) +
                          " images of " + images_file);
  Dataset d;
  d.name = "stl10";
  d.count = n;
  d.height = d.width = kStl10Side;
  d.channels = 3;
  d.num_classes = 10;
  d.class_names = class_names(fs::path(images_file).parent_path().string());
  // The statistics commonly used for STL-10's training images (as CIFAR's are hard-coded).
  d.mean = {0.4467f, 0.4398f, 0.4066f};
  d.std = {0.2603f, 0.2566f, 0.2713f};
  d.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int label = y[static_cast<size_t>(i)];
    if (label < 1 || label > 10)
      fail(labels_file, "record " + std::to_string(i) + " has label " + std::to_string(label) +
                            " (expected 1..10)");
    d.labels[static_cast<size_t>(i)] = label - 1;
  }
  constexpr int64_t kSide = kStl10Side, kPlane = kSide * kSide;
  d.images.resize(raw.size());
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = raw.data() + i * kStl10ImageBytes;
    uint8_t* dst = d.images.data() + i * kStl10ImageBytes;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t x = 0; x < kSide; ++x) {
        const uint8_t* column = src + c * kPlane + x * kSide;  // rows 0..95 of column x
        for (int64_t row = 0; row < kSide; ++row) dst[(row * kSide + x) * 3 + c] = column[row];
      }
  }
  return d;
}

Dataset load_stl10(const std::string& dir, const std::string& split) {
  const auto [x, y] = find_stl10_files(dir, split);
  return read_stl10(x, y);
}

}  // namespace mlai::io
