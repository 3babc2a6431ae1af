// RAII HDF5 files for checkpoints and packed datasets (C API, kept out of this header): H5Writer
// writes datasets (whole, or chunked/compressed row by row) and attributes to `<path>.tmp.<pid>`
// and commit() renames it into place atomically; H5Reader reads them back with dtype/shape checks,
// whole or a range of rows. Errors name the file and the dataset. Every method is thread-safe:
// all HDF5 calls in io/ are serialised by one global lock (HDF5 builds often are not thread-safe).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace mlai::io {

enum class H5Type { kFloat32, kFloat64, kInt64, kInt32, kUInt8 };
const char* h5type_name(H5Type t);  // "float32", ...
size_t h5type_size(H5Type t);

// How a dataset is stored. Default: contiguous and uncompressed.
struct H5Layout {
  std::vector<int64_t> chunk;  // chunk shape, one entry per dimension; empty: contiguous
  int deflate = 0;             // gzip level 1..9 (needs a chunk shape); 0: none
};

// Dataset names are paths: "model/layer1.0.conv1.weight" is dataset "layer1.0.conv1.weight" in
// group "model" (groups are split on '/' only and created as needed; dots stay in names).
class H5Writer {
 public:
  explicit H5Writer(const std::string& path);
  // Without commit(): closes and deletes the temporary file; the destination is never touched.
  ~H5Writer();
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  // Writes a C-contiguous array of prod(shape) elements; shape {} is a scalar.
  void write(const std::string& name, H5Type dtype, const std::vector<int64_t>& shape,
             const void* data, const H5Layout& layout = {});
  // Creates a dataset (zero-filled) to be filled a block of rows at a time with write_rows: a
  // large array need not be in memory at once, and a writer can report progress.
  void create(const std::string& name, H5Type dtype, const std::vector<int64_t>& shape,
              const H5Layout& layout = {});
  // Writes rows [first, first + count) along the first dimension: count * (row size) elements.
  void write_rows(const std::string& name, H5Type dtype, int64_t first, int64_t count,
                  const void* data);
  // Sets (or replaces) an attribute on a dataset or group; "" or "/" is the file's root.
  // A missing object is created as a group, so metadata can be attached before any data.
  void set_attr(const std::string& object, const std::string& key, const std::string& value);
  void set_attr(const std::string& object, const std::string& key, const char* value) {
    set_attr(object, key, std::string(value));
  }
  void set_attr(const std::string& object, const std::string& key, int64_t value);
  void set_attr(const std::string& object, const std::string& key, double value);
  template <std::integral T>
  void set_attr(const std::string& object, const std::string& key, T value) {
    set_attr(object, key, static_cast<int64_t>(value));
  }
  // Closes the file, fsyncs it and renames it to path (then fsyncs the directory). A crash at
  // any point leaves either the old file at path or the complete new one.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }

 private:
  int64_t require_object(const std::string& object);  // opens (or creates) a group/dataset
  int64_t create_dataset(const std::string& name, H5Type dtype, const std::vector<int64_t>& shape,
                         const H5Layout& layout);  // returns the open dataset's hid_t
  void close_file() noexcept;

  std::string path_, tmp_;
  int64_t file_ = -1;  // hid_t
};

class H5Reader {
 public:
  struct Info {
    H5Type dtype;
    std::vector<int64_t> shape;
    H5Layout layout;  // chunk shape and gzip level as stored
    int64_t numel() const;
  };

  // Throws if the file is missing, not HDF5, or truncated.
  explicit H5Reader(const std::string& path);
  ~H5Reader();
  H5Reader(const H5Reader&) = delete;
  H5Reader& operator=(const H5Reader&) = delete;

  bool has(const std::string& name) const;  // a dataset or group at that path
  // Names (not paths) of the direct children of a group, sorted.
  std::vector<std::string> list(const std::string& group = "/") const;
  // Paths of every dataset under a group, recursively, sorted ("model/fc.bias", ...).
  std::vector<std::string> list_datasets(const std::string& group = "/") const;
  Info info(const std::string& name) const;

  // Reads a dataset into out; throws if it is missing, stored as another dtype, or does not
  // hold exactly expected_numel elements (or has not exactly expected_shape).
  void read(const std::string& name, H5Type dtype, void* out, int64_t expected_numel) const;
  void read(const std::string& name, H5Type dtype, void* out,
            const std::vector<int64_t>& expected_shape) const;
  // Reads rows [first, first + count) along the first dimension (a hyperslab: only those rows'
  // chunks are read). Throws on another dtype, a scalar, or a range outside the dataset. Opened
  // datasets stay open (with a 16 MiB chunk cache each) until the reader is destroyed.
  void read_rows(const std::string& name, H5Type dtype, int64_t first, int64_t count,
                 void* out) const;

  bool has_attr(const std::string& object, const std::string& key) const;
  // The attributes of an object ("/": the root), by name, with their kind: a string, an
  // integer or a floating-point number (single values; others are listed as kOther).
  enum class AttrKind { kString, kInt, kFloat, kOther };
  std::vector<std::pair<std::string, AttrKind>> list_attrs(const std::string& object) const;
  std::string get_attr_string(const std::string& object, const std::string& key) const;
  int64_t get_attr_int(const std::string& object, const std::string& key) const;
  double get_attr_double(const std::string& object, const std::string& key) const;

  const std::string& path() const { return path_; }

 private:
  int64_t open_attr(const std::string& object, const std::string& key) const;
  int64_t open_dataset(const std::string& name) const;  // cached in datasets_

  std::string path_;
  int64_t file_ = -1;                                // hid_t
  mutable std::map<std::string, int64_t> datasets_;  // name -> open dataset (read_rows)
};

}  // namespace mlai::io
