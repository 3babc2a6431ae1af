// Chunked and compressed datasets, and reads and writes of a range of rows (HDF5 hyperslabs along
// the first dimension): what packed image datasets need to be written with progress and read one
// sample at a time without loading the file.
#include <algorithm>
#include <stdexcept>

#include "io/h5_internal.h"

namespace mlai::io {
namespace {

// Checks that `dset` holds `dtype`, has at least one dimension and rows [first, first + count);
// returns its dimensions.
template <typename Fail>
std::vector<hsize_t> checked_dims(hid_t dset, H5Type dtype, int64_t first, int64_t count,
                                  Fail fail) {
  h5::Id type(H5Dget_type(dset), H5Tclose);
  h5::Id space(H5Dget_space(dset), H5Sclose);
  const int rank = space.ok() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (!type.ok() || rank < 0) fail("unreadable header (corrupt file?)" + h5::error_detail());
  std::string what;
  const auto stored = h5::classify(type.get(), &what);
  if (!stored) fail("stored as " + what + ", which is not supported");
  if (*stored != dtype) {
    fail(std::string("stored as ") + h5type_name(*stored) + ", expected " + h5type_name(dtype));
  }
  if (rank == 0) fail("it is a scalar, not an array of rows");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  const auto rows = static_cast<int64_t>(dims[0]);
  if (first < 0 || count < 0 || first > rows || count > rows - first) {
    fail("rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
         ") are outside its " + std::to_string(rows) + " rows");
  }
  return dims;
}

// Runs H5Dread or H5Dwrite on rows [first, first + count) of dset.
template <typename Transfer>
herr_t transfer_rows(hid_t dset, std::vector<hsize_t> dims, int64_t first, int64_t count,
                     Transfer transfer) {
  h5::Id fspace(H5Dget_space(dset), H5Sclose);
  std::vector<hsize_t> start(dims.size(), 0);
  start[0] = static_cast<hsize_t>(first);
  dims[0] = static_cast<hsize_t>(count);
  if (H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, dims.data(),
                          nullptr) < 0) {
    return -1;
  }
  h5::Id mspace(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  return transfer(mspace.get(), fspace.get());
}

}  // namespace

int64_t H5Writer::create_dataset(const std::string& name, H5Type dtype,
                                 const std::vector<int64_t>& shape, const H5Layout& layout) {
  h5::Lock lock;
  if (file_ < 0) throw std::runtime_error("cannot write to " + path_ + ": already committed");
  const std::string n = h5::normalize(path_, name);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot write dataset '" + n + "' to " + tmp_ + ": " + why);
  };
  if (h5::exists(file_, n)) fail("it already exists");
  std::vector<hsize_t> dims;
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) fail("negative dimension " + std::to_string(d));
    dims.push_back(static_cast<hsize_t>(d));
    empty = empty || d == 0;
  }
  if (layout.deflate < 0 || layout.deflate > 9) {
    fail("gzip level must be in 0..9, got " + std::to_string(layout.deflate));
  }
  if (layout.deflate > 0 && layout.chunk.empty()) fail("compression needs a chunk shape");
  if (!layout.chunk.empty() && layout.chunk.size() != shape.size()) {
    fail("chunk shape has " + std::to_string(layout.chunk.size()) + " dimensions, the data " +
         std::to_string(shape.size()));
  }
  h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  // A fixed-size dataset's chunks may not exceed its shape: clamp; an empty one stays contiguous.
  if (!layout.chunk.empty() && !empty) {
    std::vector<hsize_t> chunk;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (layout.chunk[i] < 1) fail("chunk dimensions must be >= 1");
      chunk.push_back(static_cast<hsize_t>(std::min(layout.chunk[i], shape[i])));
    }
    if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0) {
      fail("bad chunk shape" + h5::error_detail());
    }
    if (layout.deflate > 0) {
      if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0) fail("this HDF5 has no gzip (deflate) filter");
      H5Pset_deflate(dcpl.get(), static_cast<unsigned>(layout.deflate));
    }
  }
  h5::Id space(shape.empty()
                   ? H5Screate(H5S_SCALAR)
                   : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
               H5Sclose);
  h5::Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  const hid_t dset = H5Dcreate2(file_, n.c_str(), h5::file_type(dtype), space.get(), lcpl.get(),
                                dcpl.get(), H5P_DEFAULT);
  if (dset < 0) fail("HDF5 could not create it" + h5::error_detail());
  return dset;
}

void H5Writer::create(const std::string& name, H5Type dtype, const std::vector<int64_t>& shape,
                      const H5Layout& layout) {
  h5::Lock lock;
  h5::Id dset(create_dataset(name, dtype, shape, layout), H5Dclose);
}

void H5Writer::write_rows(const std::string& name, H5Type dtype, int64_t first, int64_t count,
                          const void* data) {
  h5::Lock lock;
  if (file_ < 0) throw std::runtime_error("cannot write to " + path_ + ": already committed");
  const std::string n = h5::normalize(path_, name);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot write rows of dataset '" + n + "' to " + tmp_ + ": " + why);
  };
  if (!h5::exists(file_, n)) fail("no such dataset (create it first)");
  h5::Id dset(H5Dopen2(file_, n.c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.ok()) fail("it is not a dataset" + h5::error_detail());
  const std::vector<hsize_t> dims = checked_dims(dset.get(), dtype, first, count, fail);
  if (count == 0) return;
  if (data == nullptr) fail("data is null");
  const herr_t rc = transfer_rows(dset.get(), dims, first, count, [&](hid_t mem, hid_t file) {
    return H5Dwrite(dset.get(), h5::mem_type(dtype), mem, file, H5P_DEFAULT, data);
  });
  if (rc < 0) fail("write failed" + h5::error_detail());
}

int64_t H5Reader::open_dataset(const std::string& n) const {
  h5::Lock lock;
  if (auto it = datasets_.find(n); it != datasets_.end()) return it->second;
  if (!h5::exists(file_, n)) {
    throw std::runtime_error("cannot read dataset '" + n + "' from " + path_ + ": no such dataset");
  }
  // A chunk cache far above HDF5's 1 MiB default: shuffled reads touch chunks at random, and a
  // sample read through a cold cache costs a whole chunk (64 images). 256 MiB holds a small
  // data set entirely (a shuffled 10,000-image CIFAR file streamed at 297k images/s, against
  // 54k with a 16 MiB cache: bench/results/2026-11-27-cpu-data-path.md) and the recent chunks
  // of a large one; it is allocated only as chunks are read.
  h5::Id dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  H5Pset_chunk_cache(dapl.get(), 10007, 256u << 20, 0.75);
  const hid_t dset = H5Dopen2(file_, n.c_str(), dapl.get());
  if (dset < 0) {
    throw std::runtime_error("cannot read dataset '" + n + "' from " + path_ +
                             ": it is not a dataset" + h5::error_detail());
  }
  datasets_[n] = dset;
  return dset;
}

void H5Reader::read_rows(const std::string& name, H5Type dtype, int64_t first, int64_t count,
                         void* out) const {
  h5::Lock lock;
  const std::string n = h5::normalize(path_, name);
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read rows of dataset '" + n + "' from " + path_ + ": " + why);
  };
  const hid_t dset = open_dataset(n);
  const std::vector<hsize_t> dims = checked_dims(dset, dtype, first, count, fail);
  if (count == 0) return;
  const herr_t rc = transfer_rows(dset, dims, first, count, [&](hid_t mem, hid_t file) {
    return H5Dread(dset, h5::mem_type(dtype), mem, file, H5P_DEFAULT, out);
  });
  if (rc < 0) fail("read failed (truncated or corrupt file?)" + h5::error_detail());
}

}  // namespace mlai::io
