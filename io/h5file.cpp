// H5Writer: a temporary file, whole datasets, attributes, and an atomic commit (close, fsync,
// rename, fsync the directory). Chunked datasets and row-range writes are in io/h5rows.cpp.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "io/h5_internal.h"

namespace mlai::io {

const char* h5type_name(H5Type t) {
  switch (t) {
    case H5Type::kFloat32:
      return "float32";
    case H5Type::kFloat64:
      return "float64";
    case H5Type::kInt64:
      return "int64";
    case H5Type::kInt32:
      return "int32";
    case H5Type::kUInt8:
      return "uint8";
  }
  return "?";
}

size_t h5type_size(H5Type t) {
  switch (t) {
    case H5Type::kFloat32:
    case H5Type::kInt32:
      return 4;
    case H5Type::kFloat64:
    case H5Type::kInt64:
      return 8;
    case H5Type::kUInt8:
      return 1;
  }
  return 0;
}

H5Writer::H5Writer(const std::string& path) : path_(path) {
  h5::Lock lock;
  h5::silence_errors();
  tmp_ = path + ".tmp." + std::to_string(getpid());
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::path parent = fs::path(path).parent_path(); !parent.empty()) {
    fs::create_directories(parent, ec);
  }
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);  // closing the file closes everything
  file_ = H5Fcreate(tmp_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (file_ < 0) {
    throw std::runtime_error("cannot create " + tmp_ + " (for " + path + ")" +
                             (ec ? ": " + ec.message() : h5::error_detail()));
  }
}

H5Writer::~H5Writer() {
  h5::Lock lock;
  if (file_ >= 0) {
    close_file();
    std::remove(tmp_.c_str());
  }
}

void H5Writer::close_file() noexcept {
  if (file_ >= 0) H5Fclose(file_);
  file_ = -1;
}

void H5Writer::write(const std::string& name, H5Type dtype, const std::vector<int64_t>& shape,
                     const void* data, const H5Layout& layout) {
  h5::Lock lock;
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel > 0 && data == nullptr) {
    throw std::runtime_error("cannot write dataset '" + name + "' to " + tmp_ + ": data is null");
  }
  h5::Id dset(create_dataset(name, dtype, shape, layout), H5Dclose);
  if (numel > 0 &&
      H5Dwrite(dset.get(), h5::mem_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    throw std::runtime_error("cannot write dataset '" + h5::normalize(path_, name) + "' to " +
                             tmp_ + ": write failed" + h5::error_detail());
  }
}

int64_t H5Writer::require_object(const std::string& object) {
  if (file_ < 0) throw std::runtime_error("cannot write to " + path_ + ": already committed");
  if (object.empty() || object == "/") return H5Oopen(file_, "/", H5P_DEFAULT);
  const std::string n = h5::normalize(path_, object);
  if (h5::exists(file_, n)) return H5Oopen(file_, n.c_str(), H5P_DEFAULT);
  h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  return H5Gcreate2(file_, n.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT);
}

namespace {
void write_attr(hid_t obj, const std::string& file, const std::string& object,
                const std::string& key, hid_t ftype, hid_t mtype, const void* value) {
  auto fail = [&] {
    throw std::runtime_error("cannot set attribute '" + key + "' on '" + object + "' in " + file +
                             h5::error_detail());
  };
  if (obj < 0) fail();
  if (H5Aexists(obj, key.c_str()) > 0 && H5Adelete(obj, key.c_str()) < 0) fail();
  h5::Id space(H5Screate(H5S_SCALAR), H5Sclose);
  h5::Id attr(H5Acreate2(obj, key.c_str(), ftype, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok() || H5Awrite(attr.get(), mtype, value) < 0) fail();
}
}  // namespace

void H5Writer::set_attr(const std::string& object, const std::string& key,
                        const std::string& value) {
  h5::Lock lock;
  h5::Id obj(require_object(object), h5::close_object);
  // Variable-length UTF-8: h5py reads it back as str, and the empty string is allowed.
  h5::Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const char* p = value.c_str();
  write_attr(obj.get(), tmp_, object, key, type.get(), type.get(), &p);
}

void H5Writer::set_attr(const std::string& object, const std::string& key, int64_t value) {
  h5::Lock lock;
  h5::Id obj(require_object(object), h5::close_object);
  write_attr(obj.get(), tmp_, object, key, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void H5Writer::set_attr(const std::string& object, const std::string& key, double value) {
  h5::Lock lock;
  h5::Id obj(require_object(object), h5::close_object);
  write_attr(obj.get(), tmp_, object, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void H5Writer::commit() {
  h5::Lock lock;
  if (file_ < 0) throw std::runtime_error("cannot commit " + path_ + ": already committed");
  const herr_t closed = H5Fclose(file_);
  file_ = -1;
  auto fail = [&](const std::string& why) {
    std::remove(tmp_.c_str());
    throw std::runtime_error("cannot save " + path_ + ": " + why);
  };
  if (closed < 0) fail("closing " + tmp_ + " failed" + h5::error_detail());
  int fd = open(tmp_.c_str(), O_RDONLY);
  if (fd < 0) fail("cannot reopen " + tmp_ + ": " + std::strerror(errno));
  const int sync_err = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  if (sync_err) fail("fsync of " + tmp_ + " failed: " + std::strerror(sync_err));
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    fail("rename from " + tmp_ + " failed: " + std::strerror(errno));
  }
  // Make the rename itself durable; failure here only weakens the crash guarantee.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
}

}  // namespace mlai::io
