// Image decoding: the file is read whole, its format told by its first bytes (not its name),
// then libpng or TurboJPEG decode it to RGBA/RGB or gray, and the channels are made what the
// caller asked for.
#include "io/image_decode.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
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

// libpng's simplified API: no setjmp, errors in image.message.
struct Png {
  png_image image;
  Png(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::memset(&image, 0, sizeof(image));
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
      fail(path, std::string("PNG: ") + image.message);
  }
  ~Png() { png_image_free(&image); }
  ImageInfo info() const {
    return {image.height, image.width, (image.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1};
  }
};

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
  if (is_png(bytes)) return Png(path, bytes).info();
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
    Png png(path, bytes);
    png.image.format = in.channels == 3 ? PNG_FORMAT_RGBA : PNG_FORMAT_GA;
    raw.resize(PNG_IMAGE_SIZE(png.image));
    if (!png_image_finish_read(&png.image, nullptr, raw.data(), 0, nullptr))
      fail(path, std::string("PNG: ") + png.image.message);
    raw_step = in.channels == 3 ? 4 : 2;
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
