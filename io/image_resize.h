// Resizing 8-bit images as PIL's Image.resize(size, BILINEAR) does (torchvision's Resize on PIL
// images, antialiased): a triangle filter widened by the scale when shrinking, weights in 22-bit
// fixed point, two passes with 8-bit rounding between them in Pillow's order, so the bytes are
// Pillow's own (13; older releases always ran the horizontal pass first, which can change a
// pixel by one).
#pragma once

#include <cstdint>
#include <vector>

namespace mlai::io {

// in: ih x iw x c (HWC), out: oh x ow x c. Returns in unchanged when the sizes are equal.
std::vector<uint8_t> resize_bilinear(const std::vector<uint8_t>& in, int64_t ih, int64_t iw,
                                     int64_t c, int64_t oh, int64_t ow);

}  // namespace mlai::io
