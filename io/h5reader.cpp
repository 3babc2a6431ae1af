// H5Reader: opens a checkpoint read-only, lists groups and datasets, and reads datasets and
// attributes only when their stored dtype and shape match what the caller expects.
#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "io/h5_internal.h"

namespace mlai::io {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

int64_t H5Reader::Info::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

H5Reader::H5Reader(const std::string& path) : path_(path) {
  h5::Lock lock;
  h5::silence_errors();
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("cannot open " + path + ": no such file");
  }
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG);
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (file_ < 0) {
    throw std::runtime_error("cannot open " + path +
                             ": not a valid HDF5 file (truncated or corrupt?)" +
                             h5::error_detail());
  }
}

H5Reader::~H5Reader() {
  h5::Lock lock;
  for (const auto& [name, dset] : datasets_) H5Dclose(dset);
  if (file_ >= 0) H5Fclose(file_);
}

bool H5Reader::has(const std::string& name) const {
  h5::Lock lock;
  if (name.empty() || name == "/") return true;
  return h5::exists(file_, h5::normalize(path_, name));
}

std::vector<std::string> H5Reader::list(const std::string& group) const {
  h5::Lock lock;
  const std::string g = group.empty() || group == "/" ? "/" : h5::normalize(path_, group);
  h5::Id gid(g == "/" || h5::exists(file_, g) ? H5Gopen2(file_, g.c_str(), H5P_DEFAULT) : -1,
             H5Gclose);
  if (!gid.ok()) throw std::runtime_error("cannot list " + path_ + ": no group '" + g + "'");
  std::vector<std::string> names;
  H5Literate(
      gid.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
        static_cast<std::vector<std::string>*>(out)->push_back(name);
        return 0;
      },
      &names);
  return names;
}

std::vector<std::string> H5Reader::list_datasets(const std::string& group) const {
  h5::Lock lock;
  std::vector<std::string> out;
  const std::string prefix = group.empty() || group == "/" ? "" : h5::normalize(path_, group) + "/";
  for (const std::string& name : list(group)) {
    const std::string full = prefix + name;
    h5::Id obj(H5Oopen(file_, full.c_str(), H5P_DEFAULT), h5::close_object);
    const H5I_type_t type = obj.ok() ? H5Iget_type(obj.get()) : H5I_BADID;
    if (type == H5I_DATASET) out.push_back(full);
    if (type == H5I_GROUP) {
      for (auto& sub : list_datasets(full)) out.push_back(std::move(sub));
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

H5Reader::Info H5Reader::info(const std::string& name) const {
  h5::Lock lock;
  const std::string n = h5::normalize(path_, name);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read dataset '" + n + "' from " + path_ + ": " + why);
  };
  if (!h5::exists(file_, n)) fail("no such dataset");
  h5::Id dset(H5Dopen2(file_, n.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) fail("it is not a dataset" + h5::error_detail());
  h5::Id type(H5Dget_type(dset.get()), H5Tclose);
  h5::Id space(H5Dget_space(dset.get()), H5Sclose);
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (!type.ok() || rank < 0) fail("unreadable header (corrupt file?)" + h5::error_detail());
  std::string what;
  auto dtype = h5::classify(type.get(), &what);
  if (!dtype) fail("stored as " + what + ", which is not supported");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  Info out{*dtype, std::vector<int64_t>(dims.begin(), dims.end()), {}};
  h5::Id dcpl(H5Dget_create_plist(dset.get()), H5Pclose);
  if (dcpl.ok() && H5Pget_layout(dcpl.get()) == H5D_CHUNKED && rank > 0) {
    std::vector<hsize_t> chunk(static_cast<size_t>(rank));
    H5Pget_chunk(dcpl.get(), rank, chunk.data());
    out.layout.chunk.assign(chunk.begin(), chunk.end());
    unsigned flags = 0, level = 0;
    size_t nvalues = 1;
    if (H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_DEFLATE, &flags, &nvalues, &level, 0, nullptr,
                             nullptr) >= 0) {
      out.layout.deflate = static_cast<int>(level);
    }
  }
  return out;
}

void H5Reader::read(const std::string& name, H5Type dtype, void* out,
                    int64_t expected_numel) const {
  h5::Lock lock;
  const std::string n = h5::normalize(path_, name);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read dataset '" + n + "' from " + path_ + ": " + why);
  };
  const Info in = info(n);
  if (in.dtype != dtype) {
    fail(std::string("stored as ") + h5type_name(in.dtype) + ", expected " + h5type_name(dtype));
  }
  if (in.numel() != expected_numel) {
    fail("has shape " + shape_string(in.shape) + " (" + std::to_string(in.numel()) +
         " elements), expected " + std::to_string(expected_numel) + " elements");
  }
  if (expected_numel == 0) return;
  h5::Id dset(H5Dopen2(file_, n.c_str(), H5P_DEFAULT), H5Dclose);
  if (H5Dread(dset.get(), h5::mem_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    fail("read failed (truncated or corrupt file?)" + h5::error_detail());
  }
}

void H5Reader::read(const std::string& name, H5Type dtype, void* out,
                    const std::vector<int64_t>& expected_shape) const {
  h5::Lock lock;
  const Info in = info(name);
  if (in.shape != expected_shape) {
    throw std::runtime_error("cannot read dataset '" + h5::normalize(path_, name) + "' from " +
                             path_ + ": has shape " + shape_string(in.shape) + ", expected " +
                             shape_string(expected_shape));
  }
  read(name, dtype, out, in.numel());
}

int64_t H5Reader::open_attr(const std::string& object, const std::string& key) const {
  h5::Lock lock;
  const std::string o = object.empty() || object == "/" ? "/" : h5::normalize(path_, object);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read attribute '" + key + "' of '" + o + "' from " + path_ +
                             ": " + why);
  };
  if (o != "/" && !h5::exists(file_, o)) fail("no such object");
  h5::Id obj(H5Oopen(file_, o.c_str(), H5P_DEFAULT), h5::close_object);
  if (!obj.ok() || H5Aexists(obj.get(), key.c_str()) <= 0) fail("no such attribute");
  hid_t attr = H5Aopen(obj.get(), key.c_str(), H5P_DEFAULT);
  h5::Id space(H5Aget_space(attr), H5Sclose);
  if (attr < 0 || H5Sget_simple_extent_npoints(space.get()) != 1) {
    if (attr >= 0) H5Aclose(attr);
    fail("not a single value");
  }
  return attr;
}

bool H5Reader::has_attr(const std::string& object, const std::string& key) const {
  h5::Lock lock;
  const std::string o = object.empty() || object == "/" ? "/" : h5::normalize(path_, object);
  if (o != "/" && !h5::exists(file_, o)) return false;
  h5::Id obj(H5Oopen(file_, o.c_str(), H5P_DEFAULT), h5::close_object);
  return obj.ok() && H5Aexists(obj.get(), key.c_str()) > 0;
}

std::vector<std::pair<std::string, H5Reader::AttrKind>> H5Reader::list_attrs(
    const std::string& object) const {
  h5::Lock lock;
  const std::string o = object.empty() || object == "/" ? "/" : h5::normalize(path_, object);
  if (o != "/" && !h5::exists(file_, o))
    throw std::runtime_error("cannot list the attributes of '" + o + "' in " + path_ +
                             ": no such object");
  h5::Id obj(H5Oopen(file_, o.c_str(), H5P_DEFAULT), h5::close_object);
  std::vector<std::pair<std::string, AttrKind>> out;
  H5Aiterate2(
      obj.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t loc, const char* name, const H5A_info_t*, void* data) -> herr_t {
        h5::Id attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
        h5::Id type(H5Aget_type(attr.get()), H5Tclose);
        h5::Id space(H5Aget_space(attr.get()), H5Sclose);
        AttrKind kind = AttrKind::kOther;
        if (H5Sget_simple_extent_npoints(space.get()) == 1) {
          switch (H5Tget_class(type.get())) {
            case H5T_STRING: kind = AttrKind::kString; break;
            case H5T_INTEGER: kind = AttrKind::kInt; break;
            case H5T_FLOAT: kind = AttrKind::kFloat; break;
            default: break;
          }
        }
        static_cast<std::vector<std::pair<std::string, AttrKind>>*>(data)->emplace_back(name, kind);
        return 0;
      },
      &out);
  return out;
}

namespace {
[[noreturn]] void attr_type_error(const std::string& file, const std::string& object,
                                  const std::string& key, const char* wanted) {
  throw std::runtime_error("cannot read attribute '" + key + "' of '" + object + "' from " + file +
                           ": it is not " + wanted);
}
}  // namespace

std::string H5Reader::get_attr_string(const std::string& object, const std::string& key) const {
  h5::Lock lock;
  h5::Id attr(open_attr(object, key), H5Aclose);
  h5::Id type(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) attr_type_error(path_, object, key, "a string");
  h5::Id mtype(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_cset(mtype.get(), H5Tget_cset(type.get()));  // HDF5 does not convert ASCII <-> UTF-8
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    char* p = nullptr;
    if (H5Aread(attr.get(), mtype.get(), &p) < 0 || !p)
      attr_type_error(path_, object, key, "readable");
    std::string s(p);
    H5free_memory(p);
    return s;
  }
  std::string s(H5Tget_size(type.get()), '\0');  // fixed length, e.g. written by h5py as bytes
  H5Tset_size(mtype.get(), s.size());
  if (H5Aread(attr.get(), mtype.get(), s.data()) < 0)
    attr_type_error(path_, object, key, "readable");
  return s.substr(0, s.find('\0'));
}

int64_t H5Reader::get_attr_int(const std::string& object, const std::string& key) const {
  h5::Lock lock;
  h5::Id attr(open_attr(object, key), H5Aclose);
  h5::Id type(H5Aget_type(attr.get()), H5Tclose);
  int64_t v = 0;
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0) {
    attr_type_error(path_, object, key, "an integer");
  }
  return v;
}

double H5Reader::get_attr_double(const std::string& object, const std::string& key) const {
  h5::Lock lock;
  h5::Id attr(open_attr(object, key), H5Aclose);
  h5::Id type(H5Aget_type(attr.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  double v = 0;
  if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &v) < 0) {
    attr_type_error(path_, object, key, "a number");
  }
  return v;
}

}  // namespace mlai::io
