// MATLAB level-5 MAT-files (the format of scipy.io.savemat / loadmat, and of SVHN's
// train_32x32.mat): a 128-byte header, then data elements, each a type, a byte count and the
// data; whole variables (miMATRIX) may be zlib-compressed (miCOMPRESSED). Numeric arrays only
// (no cells, structs, sparse or complex), little-endian files. Version 7.3 files are HDF5
// files; they are named as such and refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

struct MatArray {
  std::string name;
  int mx_class = 0;            // MATLAB's class: 6 double, 7 single, 8 int8, 9 uint8, ...
  std::vector<int64_t> dims;   // MATLAB's order: column-major, the first index fastest
  int storage = 0;             // the element type the values are stored as (miUINT8 = 2, ...)
  std::vector<uint8_t> bytes;  // the values in that type
  int64_t numel() const;
  // The values as bytes: every value must be an integer in [0, 255] (throws naming `what`).
  std::vector<uint8_t> as_uint8(const std::string& what) const;
  // The values as integers: every value must be a whole number (throws naming `what`).
  std::vector<int64_t> as_int64(const std::string& what) const;
};

// The file's numeric variables named in `names` (all of them when empty), in file order.
// Throws naming the path on anything that is not a little-endian level-5 MAT-file, on a
// truncated or corrupt element, and on a wanted variable that is not a real numeric array.
std::vector<MatArray> read_mat(const std::string& path, const std::vector<std::string>& names = {});

}  // namespace mlai::io
