// The helpers declared in io/h5_internal.h: silencing and summarising HDF5's error stack, dtype
// mapping between H5Type and HDF5 types, and dataset path checks.
#include "io/h5_internal.h"

#include <stdexcept>

namespace mlai::io::h5 {

std::recursive_mutex& mutex() {
  static std::recursive_mutex m;
  return m;
}

void silence_errors() {
  // Per thread: a thread-safe HDF5 keeps one error stack (and its printing switch) per thread.
  thread_local const bool done = [] { return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0; }();
  (void)done;
}

std::string error_detail() {
  std::string msg;
  // Walking upward, entry 0 is where the error was detected: the most specific message.
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &msg);
  return msg.empty() ? "" : " (" + msg + ")";
}

hid_t mem_type(H5Type t) {
  switch (t) {
    case H5Type::kFloat32:
      return H5T_NATIVE_FLOAT;
    case H5Type::kFloat64:
      return H5T_NATIVE_DOUBLE;
    case H5Type::kInt64:
      return H5T_NATIVE_INT64;
    case H5Type::kInt32:
      return H5T_NATIVE_INT32;
    case H5Type::kUInt8:
      return H5T_NATIVE_UINT8;
  }
  return -1;
}

hid_t file_type(H5Type t) {
  switch (t) {
    case H5Type::kFloat32:
      return H5T_IEEE_F32LE;
    case H5Type::kFloat64:
      return H5T_IEEE_F64LE;
    case H5Type::kInt64:
      return H5T_STD_I64LE;
    case H5Type::kInt32:
      return H5T_STD_I32LE;
    case H5Type::kUInt8:
      return H5T_STD_U8LE;
  }
  return -1;
}

std::optional<H5Type> classify(hid_t type, std::string* what) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size == 4) return H5Type::kFloat32;
    if (size == 8) return H5Type::kFloat64;
    *what = "float" + std::to_string(size * 8);
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (is_signed && size == 8) return H5Type::kInt64;
    if (is_signed && size == 4) return H5Type::kInt32;
    if (!is_signed && size == 1) return H5Type::kUInt8;
    *what = std::string(is_signed ? "int" : "uint") + std::to_string(size * 8);
  } else {
    *what = cls == H5T_STRING ? "string" : "HDF5 type class " + std::to_string(int(cls));
  }
  return std::nullopt;
}

std::string normalize(const std::string& file, const std::string& name) {
  std::string n = name;
  while (!n.empty() && n.front() == '/') n.erase(0, 1);
  if (n.empty() || n.back() == '/' || n.find("//") != std::string::npos) {
    throw std::runtime_error("invalid dataset name '" + name + "' for " + file);
  }
  return n;
}

bool exists(hid_t file, const std::string& path) {
  for (size_t pos = path.find('/');; pos = path.find('/', pos + 1)) {
    std::string prefix = path.substr(0, pos);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

}  // namespace mlai::io::h5
