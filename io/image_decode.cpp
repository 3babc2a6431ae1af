// Image decoding: the file is read whole, its format told by its first bytes (not its name),
// then libpng or TurboJPEG decode it to RGBA/RGB or gray, and the channels are made what the
// caller asked for.
#include "io/image_decode.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace mlai::io {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read image " + path + ": " + what);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, std::strerror(errno));
  const std::streamsize size = f.tellg();
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<std::streamsize>(size, 0)));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(bytes.data()), size)) fail(path, "read error");
  return bytes;
}

bool is_png(const std::vector<uint8_t>& b) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return b.size() >= 8 && std::memcmp(b.data(), sig, 8) == 0;
}
bool is_jpeg(const std::vector<uint8_t>& b) {
  return b.size() >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff;
}

// libpng's own reader, set up as PIL reads PNGs: no gamma correction (a gAMA chunk is ignored;
// libpng's simplified API would convert to sRGB), 16-bit samples by their high byte, palettes
// and 1/2/4-bit gray expanded, alpha dropped. libpng reports errors by longjmp: every libpng
// call runs in a function that sets its jump point first and touches no C++ object after it,
// so a jump only skips plain data.
struct Png {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const std::vector<uint8_t>* bytes = nullptr;
  size_t pos = 0;
  char error[200] = "";
  int bit_depth = 0, color_type = 0;
  uint32_t width = 0, height = 0;
  int channels = 0;  // after the transforms: 1 or 3
  size_t row_bytes = 0;

  ~Png() { png_destroy_read_struct(&png, &info, nullptr); }

  static void on_error(png_structp p, png_const_charp msg) {
    Png* self = static_cast<Png*>(png_get_error_ptr(p));
    std::snprintf(self->error, sizeof(self->error), "%s", msg);
    png_longjmp(p, 1);
  }
  static void on_warning(png_structp, png_const_charp) {}
  static void on_read(png_structp p, png_bytep out, size_t n) {
    Png* self = static_cast<Png*>(png_get_io_ptr(p));
    if (self->pos + n > self->bytes->size()) png_error(p, "the file is truncated");
    std::memcpy(out, self->bytes->data() + self->pos, n);
    self->pos += n;
  }

  // The header and the transforms; false (with `error`) on a libpng error.
  bool start(const std::vector<uint8_t>& data) {
    bytes = &data;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, this, &Png::on_error, &Png::on_warning);
    if (png) info = png_create_info_struct(png);
    if (!png || !info) {
      std::snprintf(error, sizeof(error), "out of memory");
      return false;
    }
    if (setjmp(png_jmpbuf(png))) return false;
    png_set_read_fn(png, this, &Png::on_read);
    png_read_info(png, info);
    width = png_get_image_width(png, info);
    height = png_get_image_height(png, info);
    bit_depth = png_get_bit_depth(png, info);
    color_type = png_get_color_type(png, info);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (bit_depth == 16) png_set_strip_16(png);  // the high byte, as PIL keeps it
    if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    channels = png_get_channels(png, info);
    row_bytes = png_get_rowbytes(png, info);
    return true;
  }
  // Decodes into out (height * row_bytes bytes) through rows (height pointers).
  bool read(uint8_t* out, png_bytep* rows) {
    if (setjmp(png_jmpbuf(png))) return false;
    for (uint32_t y = 0; y < height; ++y) rows[y] = out + y * row_bytes;
    png_read_image(png, rows);
    return true;
  }
};

// Opens a PNG and checks what mlai decodes as PIL does.
void open_png(const std::string& path, const std::vector<uint8_t>& bytes, Png& png) {
  if (!png.start(bytes)) fail(path, std::string("PNG: ") + png.error);
  if (png.bit_depth == 16 && !(png.color_type & PNG_COLOR_MASK_COLOR))
    fail(path,
         "a 16-bit grayscale PNG (PIL's loader clips it to 255; convert it to 8 bits "
         "first)");
  if (png.channels != 1 && png.channels != 3)
    fail(path, "PNG: unexpected " + std::to_string(png.channels) + " channels after decoding");
}

using TjHandle = std::unique_ptr<void, int (*)(tjhandle)>;

struct Jpeg {
  TjHandle tj{tjInitDecompress(), &tjDestroy};
  ImageInfo header;
  Jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
    if (!tj) fail(path, "cannot start the JPEG decoder");
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(tj.get(), bytes.data(), bytes.size(), &w, &h, &subsamp, &colorspace) !=
        0)
      fail(path, std::string("JPEG: ") + tjGetErrorStr2(tj.get()));
    if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK)
      fail(path, "a CMYK JPEG (convert it to RGB first)");
    header = {h, w, colorspace == TJCS_GRAY ? 1 : 3};
  }
};

ImageInfo info_of(const std::string& path, const std::vector<uint8_t>& bytes) {
  if (is_png(bytes)) {
    Png png;
    open_png(path, bytes, png);
    return {png.height, png.width, png.channels};
  }
  if (is_jpeg(bytes)) return Jpeg(path, bytes).header;
  fail(path, bytes.empty() ? "the file is empty" : "not a PNG or JPEG file");
}

}  // namespace

bool is_image_file(const std::string& path) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == "png" || ext == "jpg" || ext == "jpeg";
}

ImageInfo read_image_info(const std::string& path) { return info_of(path, read_file(path)); }

std::vector<uint8_t> decode_image(const std::string& path, int channels, ImageInfo* info) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("decode_image: channels must be 1 or 3");
  const std::vector<uint8_t> bytes = read_file(path);
  ImageInfo in = info_of(path, bytes);
  if (info) *info = in;
  const auto pixels = static_cast<size_t>(in.height * in.width);
  std::vector<uint8_t> out(pixels * static_cast<size_t>(channels));
  // Decoded as stored (RGB or gray; PNG alpha dropped), then converted.
  std::vector<uint8_t> raw;
  int raw_step = 0;  // bytes per pixel in raw
  if (is_png(bytes)) {
    Png png;
    open_png(path, bytes, png);
    raw_step = png.channels;
    raw.resize(png.height * png.row_bytes);
    std::vector<png_bytep> rows(png.height);
    if (!png.read(raw.data(), rows.data())) fail(path, std::string("PNG: ") + png.error);
  } else {
    Jpeg jpeg(path, bytes);
    raw_step = in.channels;
    raw.resize(pixels * static_cast<size_t>(raw_step));
    if (tjDecompress2(jpeg.tj.get(), bytes.data(), bytes.size(), raw.data(),
                      static_cast<int>(in.width), 0, static_cast<int>(in.height),
                      in.channels == 3 ? TJPF_RGB : TJPF_GRAY, TJFLAG_ACCURATEDCT) != 0)
      fail(path, std::string("JPEG: ") + tjGetErrorStr2(jpeg.tj.get()));
  }
  for (size_t p = 0; p < pixels; ++p) {
    const uint8_t* s = &raw[p * static_cast<size_t>(raw_step)];
    uint8_t* d = &out[p * static_cast<size_t>(channels)];
    if (in.channels == 3 && channels == 3) {
      d[0] = s[0], d[1] = s[1], d[2] = s[2];
    } else if (in.channels == 3) {
      d[0] = luma(s[0], s[1], s[2]);
    } else {
      for (int c = 0; c < channels; ++c) d[c] = s[0];
    }
  }
  return out;
}

}  // namespace mlai::io
