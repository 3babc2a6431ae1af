// io/image_encode: the grid's layout and pixel scale (normalised floats back to 8-bit, rounded
// and clamped), and PNG files that decode (through io/image_decode and PIL's rules) to the
// same pixels, gray and RGB.
#include "io/image_encode.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "io/image_decode.h"

namespace mlai::io {
namespace {

TEST(ImageGrid, LaysOutTilesWithPaddingAndUndoesTheNormalisation) {
  // Three 2x2 gray images, normalised with mean 0.5, std 0.25: x = (v / 255 - 0.5) / 0.25.
  const std::vector<int> pixels{0, 10, 100, 255, 1, 2, 3, 4, 200, 201, 202, 203};
  std::vector<float> x;
  for (int v : pixels) x.push_back((static_cast<float>(v) / 255.0f - 0.5f) / 0.25f);
  const Picture p = image_grid(x.data(), 3, 2, 2, 1, {0.5f}, {0.25f}, /*per_row=*/2, /*padding=*/1);
  ASSERT_EQ(p.height, 2 * 3 + 1);  // two rows of tiles: (2 + 1) each, and 1 below
  ASSERT_EQ(p.width, 2 * 3 + 1);
  ASSERT_EQ(p.pixels.size(), 49u);
  auto at = [&](int64_t y, int64_t x) {
    return static_cast<int>(p.pixels[static_cast<size_t>(y * p.width + x)]);
  };
  for (int k = 0; k < 3; ++k) {
    const int64_t top = (k / 2) * 3 + 1, left = (k % 2) * 3 + 1;
    for (int y = 0; y < 2; ++y)
      for (int xx = 0; xx < 2; ++xx)
        EXPECT_EQ(at(top + y, left + xx), pixels[static_cast<size_t>(k * 4 + y * 2 + xx)])
            << "image " << k << " at " << y << "," << xx;
  }
  int tiles = 0;
  for (uint8_t v : p.pixels) tiles += v != 0;
  EXPECT_EQ(tiles, 11);  // every pixel outside the tiles is black (one tile pixel is 0 too)
  // Out of range and NaN: clamped (NaN as 0).
  const std::vector<float> wild{10.0f, -10.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  const Picture q = image_grid(wild.data(), 1, 2, 2, 1, {0.5f}, {0.25f}, 8, 0);
  EXPECT_EQ(q.pixels, (std::vector<uint8_t>{255, 0, 0, 128}));  // (0 * 0.25 + 0.5) * 255 = 127.5
  EXPECT_THROW(image_grid(x.data(), 3, 2, 2, 2, {0.5f, 0.5f}, {0.25f, 0.25f}),
               std::invalid_argument);
  EXPECT_THROW(image_grid(x.data(), 3, 2, 2, 1, {}, {}), std::invalid_argument);
}

TEST(EncodePng, DecodesToTheSamePixelsGrayAndRgb) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("mlai_encode_png_" + std::to_string(getpid())))
          .string();
  std::filesystem::create_directories(dir);
  for (const int channels : {1, 3}) {
    Picture p;
    p.height = 5;
    p.width = 7;
    p.channels = channels;
    for (int i = 0; i < 5 * 7 * channels; ++i)
      p.pixels.push_back(static_cast<uint8_t>((i * 37) % 256));
    const std::string png = encode_png(p);
    ASSERT_EQ(png.substr(1, 3), "PNG");
    const std::string path = dir + "/p" + std::to_string(channels) + ".png";
    std::ofstream(path, std::ios::binary) << png;
    ImageInfo info;
    EXPECT_EQ(decode_image(path, channels, &info), p.pixels) << channels << " channel(s)";
    EXPECT_EQ(info.height, 5);
    EXPECT_EQ(info.width, 7);
    EXPECT_EQ(info.channels, channels);
  }
  std::filesystem::remove_all(dir);
  Picture bad;
  bad.height = 2;
  bad.width = 2;
  bad.channels = 3;
  bad.pixels.assign(5, 0);
  EXPECT_THROW(encode_png(bad), std::invalid_argument);
}

}  // namespace
}  // namespace mlai::io
