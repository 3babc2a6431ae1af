// CIFAR-10 and CIFAR-100 binary readers: locate the files, check each file's size and labels,
// and turn planar RGB records into interleaved NHWC pixels.
#include "io/cifar.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace mlai::io {
namespace {

namespace fs = std::filesystem;

// What tells the two formats apart.
struct Format {
  const char* title;    // for messages
  const char* folder;   // where the tarball unpacks
  const char* tarball;  // what to download
  int label_bytes;      // CIFAR-100: coarse, then fine
  int num_classes;
  std::vector<std::string> train, test;
};

const Format& format(const std::string& name) {
  static const Format cifar10{"CIFAR-10",
                              "cifar-10-batches-bin",
                              "cifar-10-binary.tar.gz",
                              1,
                              10,
                              {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                               "data_batch_4.bin", "data_batch_5.bin"},
                              {"test_batch.bin"}};
  static const Format cifar100{"CIFAR-100",   "cifar-100-binary", "cifar-100-binary.tar.gz", 2, 100,
                               {"train.bin"}, {"test.bin"}};
  if (name == "cifar10") return cifar10;
  if (name == "cifar100") return cifar100;
  throw std::invalid_argument("unknown CIFAR data set '" + name + "' (cifar10 or cifar100)");
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

// Appends one file's records to d (whose images/labels already hold earlier files).
void append_file(const Format& fmt, const std::string& path, Dataset& d) {
  const int64_t record = fmt.label_bytes + kCifarPixelBytes;
  std::error_code ec;
  const auto size = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) fail(path, ec.message());
  if (size == 0 || size % record != 0) {
    fail(path, "size " + std::to_string(size) + " is not a multiple of " + std::to_string(record) +
                   " bytes (truncated? or not a " + fmt.title + " binary file)");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(path, std::strerror(errno));
  std::vector<uint8_t> raw(static_cast<size_t>(size));
  if (std::fread(raw.data(), 1, raw.size(), f.get()) != raw.size()) {
    fail(path, std::ferror(f.get()) ? std::strerror(errno) : "the file shrank while reading");
  }
  constexpr int64_t kPlane = kCifarSide * kCifarSide;
  const int64_t records = size / record;
  const size_t base = d.images.size();
  d.images.resize(base + static_cast<size_t>(records * kCifarPixelBytes));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = &raw[static_cast<size_t>(r * record)];
    if (fmt.label_bytes == 2 && rec[0] >= 20) {
      fail(path, "record " + std::to_string(r) + " has coarse label " + std::to_string(rec[0]) +
                     " (expected 0..19; is this a CIFAR-100 binary file?)");
    }
    const int label = rec[fmt.label_bytes - 1];
    if (label >= fmt.num_classes) {
      fail(path, "record " + std::to_string(r) + " has label " + std::to_string(label) +
                     " (expected 0.." + std::to_string(fmt.num_classes - 1) + "; is this " +
                     (fmt.num_classes == 10 ? "CIFAR-100 or not a CIFAR-10 batch?)"
                                            : "not a CIFAR-100 binary file?)"));
    }
    d.labels.push_back(label);
    const uint8_t* pixels = rec + fmt.label_bytes;
    uint8_t* out = &d.images[base + static_cast<size_t>(r * kCifarPixelBytes)];
    for (int64_t p = 0; p < kPlane; ++p) {
      for (int64_t c = 0; c < 3; ++c) out[p * 3 + c] = pixels[c * kPlane + p];
    }
  }
  d.count += records;
}

// CIFAR-100's class names from fine_label_names.txt (in the tarball, beside train.bin), when
// it holds one name per class; otherwise the class numbers.
std::vector<std::string> cifar100_names(const std::string& folder) {
  std::vector<std::string> names;
  std::ifstream f(fs::path(folder) / "fine_label_names.txt");
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (names.size() == 100) return names;
  names.clear();
  for (int c = 0; c < 100; ++c) names.push_back(std::to_string(c));
  return names;
}

}  // namespace

std::vector<std::string> find_cifar_files(const std::string& name, const std::string& dir,
                                          const std::string& split) {
  const Format& fmt = format(name);
  if (split != "train" && split != "test")
    throw std::invalid_argument(std::string(fmt.title) + " split must be train or test, got '" +
                                split + "'");
  const std::vector<std::string>& names = split == "train" ? fmt.train : fmt.test;
  const std::string sub = (fs::path(dir) / fmt.folder).string();
  // The folder that holds the first file is the one; every other file must be there too.
  const bool in_dir = fs::exists(fs::path(dir) / names[0]);
  const bool in_sub = !in_dir && fs::exists(fs::path(sub) / names[0]);
  const std::string base = in_sub ? sub : dir;
  std::vector<std::string> files;
  for (const auto& n : names) {
    const std::string p = (fs::path(base) / n).string();
    if (!fs::is_regular_file(p)) {
      const std::string tried = in_dir || in_sub ? p : p + ", " + (fs::path(sub) / n).string();
      throw std::runtime_error("cannot find " + std::string(fmt.title) + " " + split + " file " +
                               n + " (tried " + tried + "; expected the unpacked binary version, " +
                               fmt.tarball + ")");
    }
    files.push_back(p);
  }
  return files;
}

Dataset read_cifar(const std::string& name, const std::vector<std::string>& files) {
  const Format& fmt = format(name);
  Dataset d;
  d.name = name;
  d.height = d.width = kCifarSide;
  d.channels = 3;
  d.num_classes = fmt.num_classes;
  if (name == "cifar10") {
    d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                     "dog",      "frog",       "horse", "ship", "truck"};
    d.mean = {0.4914f, 0.4822f, 0.4465f};
    d.std = {0.2470f, 0.2435f, 0.2616f};
  } else {  // the training set's statistics, as commonly used
    d.class_names = cifar100_names(files.empty() ? "" : fs::path(files[0]).parent_path().string());
    d.mean = {0.5071f, 0.4865f, 0.4409f};
    d.std = {0.2673f, 0.2564f, 0.2762f};
  }
  for (const auto& f : files) append_file(fmt, f, d);
  return d;
}

Dataset load_cifar(const std::string& name, const std::string& dir, const std::string& split) {
  return read_cifar(name, find_cifar_files(name, dir, split));
}

}  // namespace mlai::io
