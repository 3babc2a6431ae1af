// CIFAR-10 and CIFAR-100 readers, binary and Python versions: locate the files, check each
// file's size and labels, and turn planar RGB records into interleaved NHWC pixels.
#include "io/cifar.h"

#include "io/pickle.h"
#include "io/read_file.h"

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
  // The Python version (what torchvision downloads): its folder, files, the metadata file with
  // the class names, and the keys of the labels and the names.
  const char* py_folder;
  std::vector<std::string> py_train, py_test;
  const char* py_meta;
  const char* py_labels;
  const char* py_names;
};

const Format& format(const std::string& name) {
  static const Format cifar10{"CIFAR-10",
                              "cifar-10-batches-bin",
                              "cifar-10-binary.tar.gz",
                              1,
                              10,
                              {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                               "data_batch_4.bin", "data_batch_5.bin"},
                              {"test_batch.bin"},
                              "cifar-10-batches-py",
                              {"data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                               "data_batch_5"},
                              {"test_batch"},
                              "batches.meta",
                              "labels",
                              "label_names"};
  static const Format cifar100{"CIFAR-100",       "cifar-100-binary", "cifar-100-binary.tar.gz",
                               2,                 100,                {"train.bin"},
                               {"test.bin"},      "cifar-100-python", {"train"},
                               {"test"},          "meta",             "fine_labels",
                               "fine_label_names"};
  if (name == "cifar10") return cifar10;
  if (name == "cifar100") return cifar100;
  throw std::invalid_argument("unknown CIFAR data set '" + name + "' (cifar10 or cifar100)");
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("cannot read " + path + ": " + what);
}

// Appends `records` planar 3x32x32 images (R, G then B planes) to d's NHWC pixels.
void append_planar(const uint8_t* planar, int64_t records, int64_t stride, Dataset& d) {
  constexpr int64_t kPlane = kCifarSide * kCifarSide;
  const size_t base = d.images.size();
  d.images.resize(base + static_cast<size_t>(records * kCifarPixelBytes));
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* pixels = planar + r * stride;
    uint8_t* out = &d.images[base + static_cast<size_t>(r * kCifarPixelBytes)];
    for (int64_t p = 0; p < kPlane; ++p) {
      for (int64_t c = 0; c < 3; ++c) out[p * 3 + c] = pixels[c * kPlane + p];
    }
  }
}

void check_label(const Format& fmt, const std::string& path, int64_t r, int64_t label) {
  if (label < 0 || label >= fmt.num_classes) {
    fail(path, "record " + std::to_string(r) + " has label " + std::to_string(label) +
                   " (expected 0.." + std::to_string(fmt.num_classes - 1) + "; is this " +
                   (fmt.num_classes == 10 ? "CIFAR-100 or not a CIFAR-10 batch?)"
                                          : "not a CIFAR-100 file?)"));
  }
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
  const int64_t records = size / record;
  for (int64_t r = 0; r < records; ++r) {
    const uint8_t* rec = &raw[static_cast<size_t>(r * record)];
    if (fmt.label_bytes == 2 && rec[0] >= 20) {
      fail(path, "record " + std::to_string(r) + " has coarse label " + std::to_string(rec[0]) +
                     " (expected 0..19; is this a CIFAR-100 binary file?)");
    }
    check_label(fmt, path, r, rec[fmt.label_bytes - 1]);
    d.labels.push_back(rec[fmt.label_bytes - 1]);
  }
  append_planar(raw.data() + fmt.label_bytes, records, record, d);
  d.count += records;
}

// The Python version's batch: a pickled dict with "data" (uint8 N x 3072, planar rows) and the
// labels (a list), as torchvision reads it.
void append_python_file(const Format& fmt, const std::string& path, Dataset& d) {
  PyRef batch;
  try {
    batch = unpickle_file(path);
  } catch (const std::exception& e) {
    fail(path, std::string(e.what()) + " (expected a " + fmt.title + " python-version batch)");
  }
  const PyValue* data = batch->get("data");
  const PyValue* labels = batch->get(fmt.py_labels);
  if (batch->kind != PyValue::Kind::kDict || !data || !labels)
    fail(path, std::string("not a ") + fmt.title + " python-version batch (no 'data' and '" +
                   fmt.py_labels + "' entries)");
  if (data->kind != PyValue::Kind::kArray || data->shape.size() != 2 ||
      data->shape[1] != kCifarPixelBytes || (data->dtype != "|u1" && data->dtype != "u1"))
    fail(path, "'data' is not a uint8 array of N x 3072 rows");
  std::vector<int64_t> y;
  try {
    y = labels->ints(std::string("'") + fmt.py_labels + "'");
  } catch (const std::exception& e) {
    fail(path, e.what());
  }
  const int64_t records = data->shape[0];
  if (static_cast<int64_t>(y.size()) != records || records == 0)
    fail(path, std::to_string(y.size()) + " labels for " + std::to_string(records) + " images");
  for (int64_t r = 0; r < records; ++r) check_label(fmt, path, r, y[static_cast<size_t>(r)]);
  d.labels.insert(d.labels.end(), y.begin(), y.end());
  append_planar(reinterpret_cast<const uint8_t*>(data->s.data()), records, kCifarPixelBytes, d);
  d.count += records;
}

// Class names from the Python version's metadata file, when it has one per class.
std::vector<std::string> python_names(const Format& fmt, const std::string& folder) {
  const std::string meta = (fs::path(folder) / fmt.py_meta).string();
  if (!fs::is_regular_file(meta)) return {};
  try {
    const PyRef m = unpickle_file(meta);
    const PyValue* names = m->get(fmt.py_names);
    if (names) {
      std::vector<std::string> out = names->strings(fmt.py_names);
      if (static_cast<int>(out.size()) == fmt.num_classes) return out;
    }
  } catch (const std::exception&) {  // a broken metadata file costs the names only
  }
  return {};
}

bool is_python_version(const std::string& path) {
  return fs::path(path).extension() != ".bin";
}

// CIFAR-100's class names from fine_label_names.txt (in the tarball, beside train.bin), when
// it holds one name per class; otherwise the class numbers.
std::vector<std::string> cifar100_names(const std::string& folder) {
  std::vector<std::string> names =
      read_name_lines((fs::path(folder) / "fine_label_names.txt").string());
  if (names.size() == 100) return names;
  names.clear();
  for (int c = 0; c < 100; ++c) names.push_back(std::to_string(c));
  return names;
}

}  // namespace

namespace {

// The files of one version: in `dir` itself or in `folder` under it (where the first is, all
// must be). Empty when the first is in neither; throws naming a later one that is missing.
std::vector<std::string> find_version(const Format& fmt, const std::string& dir,
                                      const char* folder, const std::vector<std::string>& names,
                                      const std::string& split, std::string& tried) {
  const std::string sub = (fs::path(dir) / folder).string();
  const bool in_dir = fs::exists(fs::path(dir) / names[0]);
  const bool in_sub = !in_dir && fs::exists(fs::path(sub) / names[0]);
  tried += (tried.empty() ? "" : ", ") + (fs::path(dir) / names[0]).string() + ", " +
           (fs::path(sub) / names[0]).string();
  if (!in_dir && !in_sub) return {};
  const std::string base = in_sub ? sub : dir;
  std::vector<std::string> files;
  for (const auto& n : names) {
    const std::string p = (fs::path(base) / n).string();
    if (!fs::is_regular_file(p))
      throw std::runtime_error("cannot find " + std::string(fmt.title) + " " + split + " file " +
                               n + " (tried " + p + ", beside " + names[0] + ")");
    files.push_back(p);
  }
  return files;
}

}  // namespace

std::vector<std::string> find_cifar_files(const std::string& name, const std::string& dir,
                                          const std::string& split) {
  const Format& fmt = format(name);
  if (split != "train" && split != "test")
    throw std::invalid_argument(std::string(fmt.title) + " split must be train or test, got '" +
                                split + "'");
  const bool train = split == "train";
  std::string tried;
  // The binary version, else the Python one (torchvision's download).
  std::vector<std::string> files =
      find_version(fmt, dir, fmt.folder, train ? fmt.train : fmt.test, split, tried);
  if (files.empty())
    files = find_version(fmt, dir, fmt.py_folder, train ? fmt.py_train : fmt.py_test, split, tried);
  if (files.empty())
    throw std::runtime_error("cannot find the " + std::string(fmt.title) + " " + split +
                             " files (tried " + tried + "; expected the unpacked binary version, " +
                             fmt.tarball + ", or the python version torchvision downloads, " +
                             fmt.py_folder + "/)");
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
  const bool python = !files.empty() && is_python_version(files[0]);
  if (python)
    if (auto names = python_names(fmt, fs::path(files[0]).parent_path().string()); !names.empty())
      d.class_names = std::move(names);
  for (const auto& f : files) {
    if (python)
      append_python_file(fmt, f, d);
    else
      append_file(fmt, f, d);
  }
  return d;
}

Dataset load_cifar(const std::string& name, const std::string& dir, const std::string& split) {
  return read_cifar(name, find_cifar_files(name, dir, split));
}

}  // namespace mlai::io
