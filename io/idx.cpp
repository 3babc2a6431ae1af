// IDX reader: a byte source that reads plain files with stdio and gzip files with zlib (detected by
// the 1f 8b magic), and strict header/size validation so a truncated or mismatched download fails
// loudly instead of training on garbage.
#include "io/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace mlai::io {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

// Reads a file front to back; gzip or plain is decided by the first two bytes.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "rb");
    if (!file_) fail(path, std::strerror(errno));
    unsigned char magic[2] = {0, 0};
    size_t n = std::fread(magic, 1, 2, file_);
    if (n == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
      std::fclose(file_);
      file_ = nullptr;
      gz_ = gzopen(path.c_str(), "rb");
      if (!gz_) fail(path, std::string("cannot open as gzip: ") + std::strerror(errno));
      gzbuffer(gz_, 1 << 18);
    } else {
      std::rewind(file_);
    }
  }
  ~ByteSource() {
    if (file_) std::fclose(file_);
    if (gz_) gzclose(gz_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Reads up to n bytes; fewer only at the end of the data. Throws on I/O or gzip errors.
  size_t read(void* dst, size_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    size_t got = 0;
    while (got < n) {
      if (file_) {
        size_t r = std::fread(out + got, 1, n - got, file_);
        got += r;
        if (r == 0) {
          if (std::ferror(file_)) fail(path_, std::strerror(errno));
          break;
        }
      } else {
        // Small chunks: a gzip error can drop the bytes of the failing call, so keep them few.
        unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1 << 20));
        int r = gzread(gz_, out + got, chunk);
        int errnum = Z_OK;
        const char* msg = gzerror(gz_, &errnum);
        if (r > 0) got += static_cast<size_t>(r);
        if (errnum == Z_BUF_ERROR) {
          truncated_gzip_ = true;  // the compressed stream ends early: report as truncation
          break;
        }
        if (r < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
          fail(path_, std::string("corrupt gzip data (") + msg + ")");
        }
        if (r == 0) break;
      }
    }
    return got;
  }
  bool truncated_gzip() const { return truncated_gzip_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
  bool truncated_gzip_ = false;
};

std::string describe_ndim(int ndim) {
  if (ndim == 3) return "images";
  if (ndim == 1) return "labels";
  return std::to_string(ndim) + "-D array";
}

std::string join_dims(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(dims[i]);
  }
  return s;
}

}  // namespace

IdxArray read_idx(const std::string& path, int expected_ndim) {
  ByteSource src(path);
  unsigned char head[4];
  size_t n = src.read(head, 4);
  if (n < 4) {
    fail(path, "file is " + std::to_string(n) + " bytes, shorter than the 4-byte IDX header");
  }
  if (head[0] != 0 || head[1] != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%02x %02x %02x %02x", head[0], head[1], head[2], head[3]);
    fail(path, std::string("not an IDX file (starts with bytes ") + buf + ", expected 00 00 08 0" +
                   std::to_string(expected_ndim) + ")");
  }
  if (head[2] != 0x08) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0x%02x", head[2]);
    fail(path, std::string("element type ") + buf +
                   " is not supported (only unsigned byte IDX files, type 0x08)");
  }
  const int ndim = head[3];
  if (ndim != expected_ndim) {
    const int expected_magic = 0x0800 | expected_ndim, found_magic = 0x0800 | ndim;
    std::string hint;
    if (ndim == 1 || ndim == 3)
      hint = " (is this " + std::string(ndim == 1 ? "a" : "an") + " " + describe_ndim(ndim) +
             " file?)";
    fail(path, "expected magic " + std::to_string(expected_magic) + " (" +
                   describe_ndim(expected_ndim) + "), found " + std::to_string(found_magic) + hint);
  }

  IdxArray out;
  int64_t total = 1;
  for (int i = 0; i < ndim; ++i) {
    unsigned char d[4];
    if (src.read(d, 4) < 4) fail(path, "truncated header (file ends inside the dimensions)");
    uint32_t v = (uint32_t(d[0]) << 24) | (uint32_t(d[1]) << 16) | (uint32_t(d[2]) << 8) | d[3];
    if (v == 0 || v > 0x7fffffffu) {
      fail(path, "dimension " + std::to_string(i) + " of " + std::to_string(ndim) + " is " +
                     std::to_string(v) + " (empty or corrupt file)");
    }
    out.dims.push_back(static_cast<int64_t>(v));
    total *= static_cast<int64_t>(v);
    if (total > (int64_t(1) << 40)) {
      fail(path, "header declares an implausible size (corrupt file?)");
    }
  }

  out.data.resize(static_cast<size_t>(total));
  size_t got = src.read(out.data.data(), out.data.size());
  if (got < out.data.size()) {
    fail(path, std::string(src.truncated_gzip() ? "gzip stream ends early" : "truncated") +
                   ": header declares " + join_dims(out.dims) + " = " + std::to_string(total) +
                   " data bytes, found " + std::to_string(got) + " (re-download the file)");
  }
  size_t extra = 0;
  unsigned char sink[4096];
  while (size_t r = src.read(sink, sizeof sink)) extra += r;
  if (extra > 0) {
    fail(path, std::to_string(extra) + " unexpected bytes after the " + std::to_string(total) +
                   " data bytes declared by the header (" + join_dims(out.dims) + ")");
  }
  return out;
}

ImageSet load_idx_pair(const std::string& images_path, const std::string& labels_path,
                       int num_classes) {
  if (num_classes <= 0) {
    throw std::runtime_error("cannot load " + labels_path + ": num_classes must be positive, got " +
                             std::to_string(num_classes));
  }
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    throw std::runtime_error("dataset mismatch: " + images_path + " has " +
                             std::to_string(images.dims[0]) + " images but " + labels_path +
                             " has " + std::to_string(labels.dims[0]) + " labels");
  }
  ImageSet set;
  set.count = images.dims[0];
  set.rows = images.dims[1];
  set.cols = images.dims[2];
  set.channels = 1;
  set.images = std::move(images.data);
  set.labels.resize(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= num_classes) {
      fail(labels_path, "label " + std::to_string(labels.data[i]) + " at index " +
                            std::to_string(i) + " is out of range for " +
                            std::to_string(num_classes) + " classes (wrong file or num_classes?)");
    }
    set.labels[i] = labels.data[i];
  }
  return set;
}

IdxFiles find_idx_files(const std::string& dir, const std::string& split) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) {
    throw std::runtime_error("dataset directory " + dir + " does not exist or is not a directory");
  }
  auto find = [&](const std::string& kind, const std::string& idx) {
    std::string tried;
    for (const char* suffix : {"", ".gz"}) {
      fs::path p = fs::path(dir) / (split + "-" + kind + "-" + idx + "-ubyte" + suffix);
      if (fs::is_regular_file(p)) return p.string();
      if (!tried.empty()) tried += ", ";
      tried += p.string();
    }
    throw std::runtime_error("no " + split + " " + kind + " file in " + dir + ": tried " + tried +
                             " (split is 'train' or 't10k')");
  };
  IdxFiles files;
  files.images = find("images", "idx3");
  files.labels = find("labels", "idx1");
  return files;
}

}  // namespace mlai::io
