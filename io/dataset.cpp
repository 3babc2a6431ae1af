// Datasets by name: IDX-based MNIST and Fashion-MNIST, CIFAR-10/100 binary, STL-10, SVHN,
// packed HDF5 files, image folders; validation split, subsets.
#include "io/dataset.h"

#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "io/cifar.h"
#include "io/stl10.h"
#include "io/svhn.h"
#include "io/h5dataset.h"
#include "io/idx.h"
#include "io/image_folder.h"
#include "kernels/fill.h"
#include "kernels/parallel.h"

namespace mlai::io {

std::vector<std::string> dataset_names() {
  return {"fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "svhn", "hdf5", "folder"};
}

std::string default_data_dir(const std::string& name) {
  if (name == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "data/" + name;
}

std::vector<int64_t> permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(kernels::mix64(seed, static_cast<uint64_t>(i)) %
                                        static_cast<uint64_t>(i + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

Dataset subset(const Dataset& d, const std::vector<int64_t>& indices) {
  Dataset s = d;
  const int64_t b = d.sample_bytes();
  s.count = static_cast<int64_t>(indices.size());
  s.labels.resize(indices.size());
  if (d.source) {
    s.rows.resize(indices.size());  // streaming: remap rows, no pixels to copy
  } else {
    s.images.resize(static_cast<size_t>(s.count * b));
  }
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= d.count) throw std::out_of_range("subset: index out of range");
    if (d.source) {
      s.rows[k] = d.source_row(i);
    } else {
      std::memcpy(&s.images[k * static_cast<size_t>(b)], &d.images[static_cast<size_t>(i * b)],
                  static_cast<size_t>(b));
    }
    s.labels[k] = d.labels[static_cast<size_t>(i)];
  }
  return s;
}

namespace {
Dataset from_idx(const std::string& name, const std::string& dir, const std::string& split) {
  const IdxFiles f = find_idx_files(dir, split);
  ImageSet s = load_idx_pair(f.images, f.labels, 10);
  Dataset d;
  d.name = name;
  d.count = s.count;
  d.height = s.rows;
  d.width = s.cols;
  d.channels = s.channels;
  d.num_classes = 10;
  d.images = std::move(s.images);
  d.labels = std::move(s.labels);
  if (name == "fashion-mnist") {
    d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    d.mean = {0.2860f};
    d.std = {0.3530f};
  } else {
    for (int c = 0; c < 10; ++c) d.class_names.push_back(std::to_string(c));
    d.mean = {0.1307f};
    d.std = {0.3081f};
  }
  return d;
}

Dataset empty_like(const Dataset& d) {
  Dataset e = d;
  e.count = 0;
  e.images.clear();
  e.labels.clear();
  return e;
}

// The hdf5 train and test sets; a test file must match the training file's images and classes.
// Without cache the file stays open and samples are read as the loader needs them.
Dataset open_h5(const std::string& path, bool cache) {
  if (cache) return read_h5_dataset(path);
  struct Source : SampleSource {
    std::shared_ptr<H5ImageReader> reader;
    int64_t read(int64_t i, uint8_t* px) const override {
      reader->read(i, px);
      return reader->label(i);
    }
  };
  auto src = std::make_shared<Source>();
  src->reader = std::make_shared<H5ImageReader>(path);
  Dataset d = src->reader->info();
  d.source = src;
  return d;
}

void load_hdf5(const std::string& data_path, bool cache, DataSplits& out) {
  const Hdf5Paths p = hdf5_paths(data_path);
  out.train = open_h5(p.train, cache);
  if (p.test.empty() || (!p.test_required && !std::filesystem::exists(p.test))) {
    out.test = empty_like(out.train);
    out.warnings.push_back("no test set: " +
                           (p.test.empty() ? "the name of " + p.train + " has no 'train' in it"
                                           : p.test + " does not exist") +
                           " (pass --data-path TRAIN.h5,TEST.h5 to name one)");
    return;
  }
  out.test = open_h5(p.test, cache);
  // The model sees test images normalized as it saw training ones: with the training file's
  // statistics (a file packed alone, as mlai_convert --from folder packs a test folder, holds
  // its own).
  out.test.mean = out.train.mean;
  out.test.std = out.train.std;
  const Dataset &a = out.train, &b = out.test;
  auto describe = [](const Dataset& d) {
    return std::to_string(d.height) + "x" + std::to_string(d.width) + "x" +
           std::to_string(d.channels) + " images in " + std::to_string(d.num_classes) + " classes";
  };
  if (a.height != b.height || a.width != b.width || a.channels != b.channels ||
      a.num_classes != b.num_classes) {
    throw std::runtime_error("test file " + p.test + " holds " + describe(b) + " but " + p.train +
                             " " + describe(a));
  }
}

// A streamed data set's samples read into memory once, on the kernel pool (errors name the
// file, as the loader's would).
void read_whole(Dataset& d) {
  if (!d.source) return;
  const int64_t b = d.sample_bytes();
  std::vector<uint8_t> images(static_cast<size_t>(d.count * b));
  kernels::cpu::parallel_for(d.count, 4, [&](int64_t first, int64_t end) {
    for (int64_t i = first; i < end; ++i)
      d.source->read(d.source_row(i), &images[static_cast<size_t>(i * b)]);
  });
  d.images = std::move(images);
  d.source.reset();
  d.rows.clear();
}

void load_folder(const std::string& dir, const FolderOptions& o, bool cache, DataSplits& out) {
  if (dir.empty())
    throw std::invalid_argument("--dataset folder needs --data-dir DIR (DIR/<class>/*.png|jpg, "
                                "or DIR/train/<class>/... with DIR/test or DIR/val)");
  PackOptions po;
  po.height = o.height, po.width = o.width, po.channels = o.channels;
  po.size_flag = "--image-size";
  FolderData f = load_image_folder(dir, po, o.stats_images);
  out.train = std::move(f.train);
  out.test = std::move(f.test);
  const Dataset& t = out.train;
  auto n = [](int64_t v) { return std::to_string(v); };
  std::string line = "image folder " + dir + ": ";
  line += n(t.count) + " training and " + n(out.test.count) + " test images in ";
  line += n(t.num_classes) + " classes, read as " + n(t.height) + "x" + n(t.width) + "x";
  line += n(t.channels) + " (HxWxC); normalization statistics from ";
  line += n(f.stats_images) + " training images";
  if (cache) {  // decoded once, here, instead of by the loader's workers every epoch
    read_whole(out.train);
    read_whole(out.test);
    line += "; decoded into memory (--cache)";
  }
  out.notes.push_back(line);
  if (out.test.count == 0)
    out.warnings.push_back("no test set: " + dir + " has no test/ or val/ folder beside train/");
  if (!f.skipped.empty())
    out.warnings.push_back(std::to_string(f.skipped.size()) +
                           " files that are not .png, .jpg or .jpeg were skipped (e.g. " +
                           f.skipped.front() + ")");
}
}  // namespace

Hdf5Paths hdf5_paths(const std::string& data_path) {
  Hdf5Paths p;
  if (const size_t comma = data_path.find(','); comma != std::string::npos) {
    p.train = data_path.substr(0, comma);
    p.test = data_path.substr(comma + 1);
    p.test_required = true;
    if (p.train.empty() || p.test.empty() || p.test.find(',') != std::string::npos) {
      throw std::invalid_argument("--data-path must be TRAIN.h5 or TRAIN.h5,TEST.h5, got '" +
                                  data_path + "'");
    }
    return p;
  }
  if (data_path.empty()) throw std::invalid_argument("--dataset hdf5 needs --data-path FILE.h5");
  p.train = data_path;
  const std::filesystem::path path(data_path);
  std::string file = path.filename().string();
  if (const size_t at = file.rfind("train"); at != std::string::npos) {
    file.replace(at, 5, "test");
    p.test = (path.parent_path() / file).string();
  }
  return p;
}

Dataset load_split(const std::string& name, const std::string& dir_in, const std::string& split) {
  if (split != "train" && split != "test") {
    throw std::invalid_argument("split must be train or test, got '" + split + "'");
  }
  const std::string dir = dir_in.empty() ? default_data_dir(name) : dir_in;
  if (name == "fashion-mnist" || name == "mnist") {
    return from_idx(name, dir, split == "train" ? "train" : "t10k");
  }
  if (name == "cifar10" || name == "cifar100") return load_cifar(name, dir, split);
  if (name == "stl10") return load_stl10(dir, split);
  if (name == "svhn") return load_svhn(dir, split);
  throw std::invalid_argument("unknown dataset '" + name +
                              "' (expected fashion-mnist, mnist, cifar10, cifar100, stl10 or svhn)");
}

DataSplits load_dataset(const std::string& name, const std::string& dir, double val_split,
                        uint64_t seed, const std::string& data_path, bool cache,
                        const FolderOptions& folder) {
  if (val_split < 0 || val_split >= 1)
    throw std::invalid_argument("--val-split must be in [0, 1), got " + std::to_string(val_split));
  DataSplits out;
  if (name == "hdf5") {
    load_hdf5(data_path, cache, out);
  } else if (name == "folder") {
    load_folder(dir, folder, cache, out);
  } else if (name == "fashion-mnist" || name == "mnist" || name == "cifar10" ||
             name == "cifar100" || name == "stl10" || name == "svhn") {
    out.train = load_split(name, dir, "train");
    out.test = load_split(name, dir, "test");
  } else {
    std::string names;
    for (const auto& n : dataset_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown dataset '" + name + "' (expected " + names + ")");
  }
  const auto n_val = static_cast<int64_t>(static_cast<double>(out.train.count) * val_split);
  if (n_val > 0) {
    const std::vector<int64_t> p = permutation(out.train.count, seed ^ 0x5eed5eedull);
    out.val = subset(out.train, std::vector<int64_t>(p.begin(), p.begin() + n_val));
    out.train = subset(out.train, std::vector<int64_t>(p.begin() + n_val, p.end()));
  } else {
    out.val = empty_like(out.train);
  }
  return out;
}

}  // namespace mlai::io
