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
class H5Writer;

inline constexpr const char* kH5DatasetFormat = "mlai-images-1";
inline constexpr int64_t kH5ImagesPerChunk = 64;

// Called as blocks of images are written: (images done, images in all).
using WriteProgress = std::function<void(int64_t done, int64_t total)>;

// Writes d to path (through a temporary file renamed into place, so a crash never leaves a
// partial file). compression: gzip level 0 (none: fastest random reads) to 9. `source` says
// where the data came from ("fashion-mnist train"). Throws on an inconsistent Dataset.
void write_h5_dataset(const Dataset& d, const std::string& path, const std::string& source,
                      int compression = 0, const WriteProgress& progress = {});

// The same file written a block of images at a time, for data sets that do not fit in memory
// (mlai_convert --from folder): create, write() blocks in any order, then finish() with the
// labels and the attributes. Destroyed without finish(), it leaves nothing at path.
class H5DatasetWriter {
 public:
  H5DatasetWriter(const std::string& path, int64_t count, int64_t height, int64_t width,
                  int64_t channels, int compression = 0);
  ~H5DatasetWriter();
  H5DatasetWriter(const H5DatasetWriter&) = delete;
  H5DatasetWriter& operator=(const H5DatasetWriter&) = delete;

  // Images [first, first + n): n * height * width * channels bytes.
  void write(int64_t first, int64_t n, const uint8_t* pixels);
  // header: name, num_classes, class_names, mean, std and the count labels (its images unused).
  // Checked as write_h5_dataset checks a Dataset; then the file is renamed into place.
  void finish(const Dataset& header, const std::string& source);

 private:
  std::unique_ptr<H5Writer> file_;
  int64_t count_, height_, width_, channels_;
};

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
