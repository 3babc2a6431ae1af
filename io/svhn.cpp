// SVHN reader: X and y from the split's MAT-file, column-major 32x32x3xN pixels turned into
// NHWC, labels 10 -> 0.
#include "io/svhn.h"

#include <filesystem>
#include <stdexcept>
#include <vector>

#include "io/matfile.h"

namespace mlai::io {

Dataset load_svhn(const std::string& dir, const std::string& split) {
  if (split != "train" && split != "test" && split != "extra")
    throw std::invalid_argument("SVHN split must be train, test or extra, got '" + split + "'");
  const std::string path = (std::filesystem::path(dir) / (split + "_32x32.mat")).string();
  if (!std::filesystem::is_regular_file(path))
    throw std::runtime_error("cannot find the SVHN " + split + " file " + path +
                             " (torchvision's SVHN(root, split='" + split +
                             "', download=True) saves it there; or download " + split +
                             "_32x32.mat from ufldl.stanford.edu/housenumbers)");
  const std::vector<MatArray> vars = read_mat(path, {"X", "y"});
  const MatArray& x = vars[0].name == "X" ? vars[0] : vars[1];
  const MatArray& y = vars[0].name == "y" ? vars[0] : vars[1];
  constexpr int64_t kSide = 32, kImage = kSide * kSide * 3;
  if (x.dims.size() != 4 || x.dims[0] != kSide || x.dims[1] != kSide || x.dims[2] != 3)
    throw std::runtime_error("cannot read " + path + ": X is not 32 x 32 x 3 x N");
  const int64_t n = x.dims[3];
  if (y.numel() != n || (y.dims.size() == 2 && y.dims[0] != n && y.dims[1] != n))
    throw std::runtime_error("cannot read " + path + ": y holds " + std::to_string(y.numel()) +
                             " labels for " + std::to_string(n) + " images");
  Dataset d;
  d.name = "svhn";
  d.count = n;
  d.height = d.width = kSide;
  d.channels = 3;
  d.num_classes = 10;
  for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
  // The statistics commonly used for SVHN's training images.
  d.mean = {0.4377f, 0.4438f, 0.4728f};
  d.std = {0.1980f, 0.2010f, 0.1970f};
  const std::vector<int64_t> labels = y.as_int64(path + ": y");
  d.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t l = labels[static_cast<size_t>(i)];
    if (l < 1 || l > 10)
      throw std::runtime_error("cannot read " + path + ": label " + std::to_string(i) + " is " +
                               std::to_string(l) + " (expected 1..10, 10 for the digit 0)");
    d.labels[static_cast<size_t>(i)] = l % 10;
  }
  const std::vector<uint8_t> pixels = x.as_uint8(path + ": X");
  // X(row, col, c, i) is element row + 32 col + 1024 c + 3072 i.
  d.images.resize(static_cast<size_t>(n * kImage));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t col = 0; col < kSide; ++col) {
        const uint8_t* src = pixels.data() + i * kImage + c * kSide * kSide + col * kSide;
        uint8_t* dst = d.images.data() + i * kImage + col * 3 + c;
        for (int64_t row = 0; row < kSide; ++row) dst[row * kSide * 3] = src[row];
      }
  return d;
}

}  // namespace mlai::io
