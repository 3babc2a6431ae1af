// Packed image datasets in one HDF5 file ("mlai-images-1"): `images` uint8 N x H x W x C in
// chunks of 64 images (optionally gzip-compressed), `labels` int64 N, and root attributes
// format, num_classes, class_names / mean / std (JSON arrays), source and name.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io/dataset.h"

namespace mlai::io {

class H5Reader;

inline constexpr const char* kH5DatasetFormat = "mlai-images-1";
inline constexpr int64_t kH5ImagesPerChunk = 64;

// Called as blocks of images are written: (images done, images in all).
using WriteProgress = std::function<void(int64_t done, int64_t total)>;

// Writes d to path (through a temporary file renamed into place, so a crash never leaves a
// partial file). compression: gzip level 0 (none: fastest random reads) to 9. `source` says
// where the data came from ("fashion-mnist train"). Throws on an inconsistent Dataset.
void write_h5_dataset(const Dataset& d, const std::string& path, const std::string& source,
                      int compression = 0, const WriteProgress& progress = {});

// Reads the whole file into memory, fully validated: the format attribute, images uint8 4-D,
// labels int64 1-D with as many entries, every label in [0, num_classes), class_names, mean and
// std parseable with the right lengths. Each problem is a one-line error naming the file.
Dataset read_h5_dataset(const std::string& path);

// Opens a packed file once (validated as read_h5_dataset does, labels loaded) and reads images
// on demand. Thread-safe: all HDF5 access in io/ is serialised by one lock (see h5_internal.h),
// so several loader threads may share one reader.
class H5ImageReader {
 public:
  explicit H5ImageReader(const std::string& path);
  ~H5ImageReader();
  H5ImageReader(const H5ImageReader&) = delete;
  H5ImageReader& operator=(const H5ImageReader&) = delete;

  // Everything but the pixels: shape, classes, normalization, all labels (images is empty).
  const Dataset& info() const { return info_; }
  const std::string& source() const { return source_; }
  int64_t count() const { return info_.count; }
  int64_t sample_bytes() const { return info_.sample_bytes(); }
  int64_t label(int64_t i) const;

  void read(int64_t i, uint8_t* out) const;                     // sample_bytes() bytes
  void read(int64_t first, int64_t count, uint8_t* out) const;  // count * sample_bytes() bytes

 private:
  std::unique_ptr<H5Reader> file_;
  Dataset info_;
  std::string source_;
};

}  // namespace mlai::io
