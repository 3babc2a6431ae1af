// Images out: a batch laid out as one grid picture (as torchvision.utils.make_grid does for
// TensorBoard's add_image) and PNG encoding through libpng, for TensorBoard's IMAGES tab.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

// 8-bit pixels, row-major HWC.
struct Picture {
  int64_t height = 0, width = 0;
  int channels = 0;  // 1 (gray) or 3 (RGB)
  std::vector<uint8_t> pixels;
};

// `n` normalised NHWC float images (x = (v / 255 - mean[c]) / std[c], the loader's output)
// back to 8-bit pixels (v rounded and clamped to [0, 255]) and laid out `per_row` to a row with
// `padding` black pixels between and around them.
Picture image_grid(const float* images, int64_t n, int64_t height, int64_t width, int channels,
                   const std::vector<float>& mean, const std::vector<float>& std,
                   int64_t per_row = 8, int64_t padding = 2);

// The PNG file's bytes (8-bit gray or RGB, no interlacing).
std::string encode_png(const Picture& p);

}  // namespace mlai::io
