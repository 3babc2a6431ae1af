// CIFAR-10 binary reader: locates the batch files, checks each file's size and labels, and turns
// planar RGB records into interleaved NHWC pixels.
#include "io/cifar.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

namespace mlai::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

std::vector<std::string> split_names(const std::string& split) {
  if (split == "train") {
    return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
            "data_batch_5.bin"};
  }
  if (split == "test") return {"test_batch.bin"};
  throw std::invalid_argument("CIFAR-10 split must be train or test, got '" + split + "'");
}

// Appends one file's records to d (whose images/labels already hold earlier files).
void append_file(const std::string& path, Dataset& d) {
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) fail(path, ec.message());
  if (size == 0 || size % kCifarRecordBytes != 0) {
    fail(path, "size " + std::to_string(size) + " is not a multiple of " +
                   std::to_string(kCifarRecordBytes) + " bytes (truncated?)");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::strerror(errno));
  std::vector<uint8_t> raw(static_cast<size_t>(size));
  if (std::fread(raw.data(), 1, raw.size(), f.get()) != raw.size()) {
    fail(path, std::ferror(f.get()) ? std::strerror(errno) : "the file shrank while reading");
  }
  constexpr int64_t kPlane = kCifarSide * kCifarSide;
  const int64_t records = size / kCifarRecordBytes;
  const size_t base = d.images.size();
  d.images.resize(base + static_cast<size_t>(records * 3 * kPlane));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = &raw[static_cast<size_t>(r * kCifarRecordBytes)];
    if (rec[0] > 9) {
      fail(path, "record " + std::to_string(r) + " has label " + std::to_string(rec[0]) +
                     " (expected 0..9; is this CIFAR-100 or not a CIFAR-10 batch?)");
    }
    d.labels.push_back(rec[0]);
    uint8_t* out = &d.images[base + static_cast<size_t>(r * 3 * kPlane)];
    for (int64_t p = 0; p < kPlane; ++p) {
      for (int64_t c = 0; c < 3; ++c) out[p * 3 + c] = rec[1 + c * kPlane + p];
    }
  }
  d.count += records;
}

}  // namespace

std::vector<std::string> find_cifar10_files(const std::string& dir, const std::string& split) {
  const std::vector<std::string> names = split_names(split);
  const std::string sub = (fs::path(dir) / "cifar-10-batches-bin").string();
  // The folder that holds the first file is the one; every other file must be there too.
  const bool in_dir = fs::exists(fs::path(dir) / names[0]);
  const bool in_sub = !in_dir && fs::exists(fs::path(sub) / names[0]);
  const std::string base = in_sub ? sub : dir;
  std::vector<std::string> files;
  for (const auto& n : names) {
    const std::string p = (fs::path(base) / n).string();
    if (!fs::is_regular_file(p)) {
      const std::string tried = in_dir || in_sub ? p : p + ", " + (fs::path(sub) / n).string();
      throw std::runtime_error("cannot find CIFAR-10 " + split + " file " + n + " (tried " + tried +
                               "; expected the unpacked binary version, " +
                               "cifar-10-binary.tar.gz)");
    }
    files.push_back(p);
  }
  return files;
}

Dataset read_cifar10(const std::vector<std::string>& files) {
  Dataset d;
  d.name = "cifar10";
  d.height = d.width = kCifarSide;
  d.channels = 3;
  d.num_classes = 10;
  d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                   "dog",      "frog",       "horse", "ship", "truck"};
  d.mean = {0.4914f, 0.4822f, 0.4465f};
  d.std = {0.2470f, 0.2435f, 0.2616f};
  for (const auto& f : files) append_file(f, d);
  return d;
}

Dataset load_cifar10(const std::string& dir, const std::string& split) {
  return read_cifar10(find_cifar10_files(dir, split));
}

}  // namespace mlai::io
