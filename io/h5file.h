// RAII HDF5 files for checkpoints (C API, kept out of this header): H5Writer writes datasets and
// attributes to `<path>.tmp.<pid>` and commit() renames it into place atomically; H5Reader reads
// them back with dtype/shape checks. Errors name the file and the dataset.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

enum class H5Type { kFloat32, kFloat64, kInt64, kInt32, kUInt8 };
const char* h5type_name(H5Type t);  // "float32", ...
size_t h5type_size(H5Type t);

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
  void close_file() noexcept;

  std::string path_, tmp_;
  int64_t file_ = -1;  // hid_t
};

class H5Reader {
 public:
  struct Info {
    H5Type dtype;
    std::vector<int64_t> shape;
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

  bool has_attr(const std::string& object, const std::string& key) const;
  std::string get_attr_string(const std::string& object, const std::string& key) const;
  int64_t get_attr_int(const std::string& object, const std::string& key) const;
  double get_attr_double(const std::string& object, const std::string& key) const;

  const std::string& path() const { return path_; }

 private:
  int64_t open_attr(const std::string& object, const std::string& key) const;

  std::string path_;
  int64_t file_ = -1;  // hid_t
};

}  // namespace mlai::io
