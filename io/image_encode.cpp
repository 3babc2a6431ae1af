// Grid layout and PNG encoding (see image_encode.h). libpng writes into a string through its
// write callback; its errors longjmp back here and become exceptions.
#include "io/image_encode.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <stdexcept>

namespace mlai::io {

Picture image_grid(const float* images, int64_t n, int64_t height, int64_t width, int channels,
                   const std::vector<float>& mean, const std::vector<float>& std, int64_t per_row,
                   int64_t padding) {
  if (n <= 0 || height <= 0 || width <= 0 || per_row <= 0 || padding < 0)
    throw std::invalid_argument("image_grid: nothing to lay out");
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("image_grid: 1 or 3 channels, not " + std::to_string(channels));
  if (mean.size() != static_cast<size_t>(channels) || std.size() != static_cast<size_t>(channels))
    throw std::invalid_argument("image_grid: a mean and std per channel");
  const int64_t cols = std::min(per_row, n);
  const int64_t rows = (n + cols - 1) / cols;
  Picture p;
  p.channels = channels;
  p.height = rows * (height + padding) + padding;
  p.width = cols * (width + padding) + padding;
  p.pixels.assign(static_cast<size_t>(p.height * p.width * channels), 0);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t top = (k / cols) * (height + padding) + padding;
    const int64_t left = (k % cols) * (width + padding) + padding;
    const float* img = images + k * height * width * channels;
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x)
        for (int c = 0; c < channels; ++c) {
          const float v = img[(y * width + x) * channels + c];
          const double pixel = (static_cast<double>(v) * std[static_cast<size_t>(c)] +
                                mean[static_cast<size_t>(c)]) *
                               255.0;
          const double clamped = std::isnan(pixel) ? 0.0 : std::clamp(pixel, 0.0, 255.0);
          p.pixels[static_cast<size_t>(((top + y) * p.width + left + x) * channels + c)] =
              static_cast<uint8_t>(std::lround(clamped));
        }
  }
  return p;
}

namespace {
struct PngWriter {
  std::string out;
  char error[256] = "";
  static void on_write(png_structp png, png_bytep data, size_t n) {
    static_cast<PngWriter*>(png_get_io_ptr(png))->out.append(reinterpret_cast<char*>(data), n);
  }
  static void on_flush(png_structp) {}
  static void on_error(png_structp png, png_const_charp msg) {
    PngWriter* self = static_cast<PngWriter*>(png_get_error_ptr(png));
    std::snprintf(self->error, sizeof(self->error), "%s", msg);
    png_longjmp(png, 1);
  }
  static void on_warning(png_structp, png_const_charp) {}
};
}  // namespace

std::string encode_png(const Picture& p) {
  if ((p.channels != 1 && p.channels != 3) || p.height <= 0 || p.width <= 0 ||
      p.pixels.size() != static_cast<size_t>(p.height * p.width * p.channels))
    throw std::invalid_argument("encode_png: a picture of " + std::to_string(p.height) + "x" +
                                std::to_string(p.width) + "x" + std::to_string(p.channels) +
                                " with " + std::to_string(p.pixels.size()) + " bytes");
  PngWriter w;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, &PngWriter::on_error,
                                            &PngWriter::on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("encode_png: out of memory");
  }
  std::vector<png_const_bytep> rows(static_cast<size_t>(p.height));
  for (int64_t y = 0; y < p.height; ++y)
    rows[static_cast<size_t>(y)] = &p.pixels[static_cast<size_t>(y * p.width * p.channels)];
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error(std::string("encode_png: ") + w.error);
  }
  png_set_write_fn(png, &w, &PngWriter::on_write, &PngWriter::on_flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(p.width), static_cast<png_uint_32>(p.height), 8,
               p.channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, const_cast<png_bytepp>(rows.data()));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return w.out;
}

}  // namespace mlai::io
