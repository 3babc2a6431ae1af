// The level-5 MAT-file reader (see matfile.h): element tags, small-element packing, 8-byte
// padding, zlib inflation of compressed variables, and the numeric storage types.
#include "io/matfile.h"

#include <zlib.h>

#include "io/read_file.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace mlai::io {
namespace {

// MAT-file element types.
enum : uint32_t {
  miINT8 = 1, miUINT8 = 2, miINT16 = 3, miUINT16 = 4, miINT32 = 5, miUINT32 = 6,
  miSINGLE = 7, miDOUBLE = 9, miINT64 = 12, miUINT64 = 13, miMATRIX = 14, miCOMPRESSED = 15
};
constexpr int kMxCellClass = 1, kMxStructClass = 2, kMxObjectClass = 3, kMxCharClass = 4,
              kMxSparseClass = 5;
constexpr uint32_t kComplexFlag = 0x800;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

int type_size(uint32_t t) {
  switch (t) {
    case miINT8: case miUINT8: return 1;
    case miINT16: case miUINT16: return 2;
    case miINT32: case miUINT32: case miSINGLE: return 4;
    case miDOUBLE: case miINT64: case miUINT64: return 8;
    default: return 0;
  }
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A cursor over one buffer of elements.
struct Reader {
  const uint8_t* p;
  size_t size, pos = 0;
  const std::string& path;

  bool done() const { return pos >= size; }
  // The next element: its type and data (the small format packs up to 4 bytes in the tag).
  // Advances past the data and its padding to 8 bytes (none after compressed data).
  std::pair<uint32_t, std::pair<const uint8_t*, size_t>> next() {
    if (size - pos < 8) fail(path, "truncated element tag at byte " + std::to_string(pos));
    const uint32_t w0 = load<uint32_t>(p + pos), w1 = load<uint32_t>(p + pos + 4);
    if ((w0 >> 16) != 0) {  // small data element
      const uint32_t type = w0 & 0xffff, n = w0 >> 16;
      if (n > 4) fail(path, "corrupt small element at byte " + std::to_string(pos));
      const uint8_t* data = p + pos + 4;
      pos += 8;
      return {type, {data, n}};
    }
    if (w1 > size - pos - 8)
      fail(path, "element at byte " + std::to_string(pos) + " claims " + std::to_string(w1) +
                     " bytes, more than the file holds (truncated?)");
    const uint8_t* data = p + pos + 8;
    pos += 8 + w1;
    if (w0 != miCOMPRESSED) pos = std::min(size, (pos + 7) & ~size_t{7});
    return {w0, {data, w1}};
  }
};

// Inflates one compressed element: the inner element's tag and data.
std::vector<uint8_t> inflate_element(const uint8_t* data, size_t n, const std::string& path) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) fail(path, "zlib could not start");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&z, &inflateEnd);
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(n);
  std::vector<uint8_t> out(8);
  auto run = [&](size_t from) {
    z.next_out = out.data() + from;
    z.avail_out = static_cast<uInt>(out.size() - from);
    const int rc = inflate(&z, Z_SYNC_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END)
      fail(path, std::string("corrupt compressed variable (zlib: ") + (z.msg ? z.msg : "error") +
                     ")");
    return rc;
  };
  int rc = run(0);
  if (z.avail_out != 0) fail(path, "compressed variable ends inside its tag");
  const uint32_t inner = load<uint32_t>(out.data() + 4);
  if ((load<uint32_t>(out.data()) >> 16) == 0) {
    out.resize(size_t{8} + inner);
    while (rc != Z_STREAM_END && z.avail_out == 0 && z.total_out < out.size()) {
      rc = run(z.total_out);
    }
    if (z.total_out != out.size())
      fail(path, "compressed variable is shorter than its tag says (truncated?)");
  }
  return out;
}

bool is_integer_type(uint32_t t) { return t != miSINGLE && t != miDOUBLE; }

// Value i of a stored array, as double (exact for every type but 64-bit integers above 2^53).
double value(const MatArray& a, int64_t i) {
  const uint8_t* p = a.bytes.data() + i * type_size(static_cast<uint32_t>(a.storage));
  switch (a.storage) {
    case miINT8: return load<int8_t>(p);
    case miUINT8: return load<uint8_t>(p);
    case miINT16: return load<int16_t>(p);
    case miUINT16: return load<uint16_t>(p);
    case miINT32: return load<int32_t>(p);
    case miUINT32: return load<uint32_t>(p);
    case miSINGLE: return load<float>(p);
    case miDOUBLE: return load<double>(p);
    case miINT64: return static_cast<double>(load<int64_t>(p));
    default: return static_cast<double>(load<uint64_t>(p));
  }
}

// Parses one miMATRIX element's data; false when it is not a numeric array (skipped unless wanted).
bool parse_matrix(const uint8_t* data, size_t n, const std::string& path, MatArray& a,
                  std::string& why) {
  Reader r{data, n, 0, path};
  if (r.done()) {  // an empty matrix element (MATLAB writes these for empty values)
    why = "empty";
    return false;
  }
  const auto [ft, flags] = r.next();
  if (ft != miUINT32 || flags.second < 8) fail(path, "corrupt array flags");
  const uint32_t f0 = load<uint32_t>(flags.first);
  a.mx_class = static_cast<int>(f0 & 0xff);
  const auto [dt, dims] = r.next();
  if (dt != miINT32 || dims.second % 4 != 0 || dims.second == 0) fail(path, "corrupt dimensions");
  a.dims.clear();
  for (size_t k = 0; k < dims.second; k += 4) a.dims.push_back(load<int32_t>(dims.first + k));
  const auto [nt, name] = r.next();
  if (nt != miINT8) fail(path, "corrupt array name");
  a.name.assign(reinterpret_cast<const char*>(name.first), name.second);
  if (a.mx_class == kMxCellClass || a.mx_class == kMxStructClass ||
      a.mx_class == kMxObjectClass || a.mx_class == kMxCharClass ||
      a.mx_class == kMxSparseClass || a.mx_class > 15) {
    why = "not a numeric array (MATLAB class " + std::to_string(a.mx_class) + ")";
    return false;
  }
  if (f0 & kComplexFlag) {
    why = "complex";
    return false;
  }
  const auto [st, real] = r.next();
  if (type_size(st) == 0) fail(path, a.name + ": unknown storage type " + std::to_string(st));
  a.storage = static_cast<int>(st);
  if (real.second != static_cast<size_t>(a.numel()) * static_cast<size_t>(type_size(st)))
    fail(path, a.name + ": " + std::to_string(real.second) + " bytes of values for " +
                   std::to_string(a.numel()) + " elements");
  a.bytes.assign(real.first, real.first + real.second);
  return true;
}

}  // namespace

int64_t MatArray::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<uint8_t> MatArray::as_uint8(const std::string& what) const {
  const int64_t n = numel();
  std::vector<uint8_t> out(static_cast<size_t>(n));
  if (storage == miUINT8) {
    std::memcpy(out.data(), bytes.data(), out.size());
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double v = value(*this, i);
    if (!(v >= 0 && v <= 255) || v != std::floor(v))
      throw std::runtime_error(what + ": value " + std::to_string(v) + " at element " +
                               std::to_string(i) + " is not a byte");
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  }
  return out;
}

std::vector<int64_t> MatArray::as_int64(const std::string& what) const {
  const int64_t n = numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double v = value(*this, i);
    if (!is_integer_type(static_cast<uint32_t>(storage)) && (!std::isfinite(v) || v != std::floor(v)))
      throw std::runtime_error(what + ": value " + std::to_string(v) + " at element " +
                               std::to_string(i) + " is not a whole number");
    out[static_cast<size_t>(i)] = static_cast<int64_t>(v);
  }
  return out;
}

std::vector<MatArray> read_mat(const std::string& path, const std::vector<std::string>& names) {
  const std::vector<uint8_t> file = read_file_bytes(path);
  if (file.size() < 128 || std::memcmp(file.data(), "MATLAB", 6) != 0)
    fail(path, "not a MATLAB MAT-file (no 'MATLAB' header)");
  const std::string text(reinterpret_cast<const char*>(file.data()), 116);
  if (text.find("MATLAB 7.3") != std::string::npos)
    fail(path, "a MATLAB 7.3 MAT-file (HDF5 inside): save it with -v7 or scipy.io.savemat");
  if (file[126] == 'M' && file[127] == 'I')
    fail(path, "a big-endian MAT-file (only little-endian files are read)");
  if (file[126] != 'I' || file[127] != 'M' || load<uint16_t>(file.data() + 124) != 0x0100)
    fail(path, "not a level-5 MAT-file (bad version or endian bytes)");
  auto wanted = [&](const std::string& n) {
    if (names.empty()) return true;
    for (const auto& w : names)
      if (w == n) return true;
    return false;
  };
  std::vector<MatArray> out;
  Reader r{file.data(), file.size(), 128, path};
  while (!r.done()) {
    auto [type, data] = r.next();
    std::vector<uint8_t> inflated;
    if (type == miCOMPRESSED) {
      inflated = inflate_element(data.first, data.second, path);
      Reader inner{inflated.data(), inflated.size(), 0, path};
      std::tie(type, data) = inner.next();
    }
    if (type != miMATRIX) continue;  // (other top-level elements: not variables)
    MatArray a;
    std::string why;
    if (parse_matrix(data.first, data.second, path, a, why)) {
      if (wanted(a.name)) out.push_back(std::move(a));
    } else if (!a.name.empty() && !names.empty() && wanted(a.name)) {
      fail(path, "variable '" + a.name + "' is " + why + "; expected a real numeric array");
    }
  }
  for (const auto& w : names) {
    bool found = false;
    for (const auto& a : out) found = found || a.name == w;
    if (!found) fail(path, "no variable '" + w + "'");
  }
  return out;
}

}  // namespace mlai::io
