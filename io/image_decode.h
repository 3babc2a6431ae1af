// PNG and JPEG files decoded to 8-bit HWC pixels with 1 (gray) or 3 (RGB) channels, as PIL's
// convert("L") / convert("RGB") give them (what torchvision's ImageFolder loader does): alpha
// dropped, gray from colour as ITU-R 601-2 luma, no gamma correction, 16-bit colour by its
// high byte. PNG through libpng, JPEG through libjpeg-turbo's TurboJPEG API (accurate DCT, as
// PIL decodes). 16-bit grayscale PNGs are refused (PIL clips them). Errors name the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

struct ImageInfo {
  int64_t height = 0, width = 0;
  int channels = 0;  // as stored: 1 (gray, with or without alpha) or 3 (colour, palette too)
};

// .png, .jpg or .jpeg, in any case: the files an image folder's classes hold.
bool is_image_file(const std::string& path);

// The size and colour of an image from its header (the pixels are not decoded).
ImageInfo read_image_info(const std::string& path);

// height * width * channels bytes; `channels` 1 or 3 whatever the file stores. `info`, when
// given, receives the file's own size and colour.
std::vector<uint8_t> decode_image(const std::string& path, int channels, ImageInfo* info = nullptr);

// PIL's "L" from RGB: (299 R + 587 G + 114 B) / 1000, in its 16-bit fixed point.
inline uint8_t luma(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

}  // namespace mlai::io
