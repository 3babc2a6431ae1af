// Datasets by name: IDX-based MNIST and Fashion-MNIST, validation split, subsets.
#include "io/dataset.h"

#include <cstring>
#include <stdexcept>

#include "io/idx.h"
#include "kernels/fill.h"

namespace mlai::io {

std::vector<std::string> dataset_names() { return {"fashion-mnist", "mnist"}; }

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
  s.images.resize(static_cast<size_t>(s.count * b));
  s.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= d.count) throw std::out_of_range("subset: index out of range");
    std::memcpy(&s.images[k * static_cast<size_t>(b)], &d.images[static_cast<size_t>(i * b)],
                static_cast<size_t>(b));
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
}  // namespace

DataSplits load_dataset(const std::string& name, const std::string& dir_in, double val_split,
                        uint64_t seed) {
  if (val_split < 0 || val_split >= 1)
    throw std::invalid_argument("--val-split must be in [0, 1), got " + std::to_string(val_split));
  const std::string dir = dir_in.empty() ? default_data_dir(name) : dir_in;
  DataSplits out;
  if (name == "fashion-mnist" || name == "mnist") {
    out.train = from_idx(name, dir, "train");
    out.test = from_idx(name, dir, "t10k");
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
    out.val = out.train;
    out.val.count = 0;
    out.val.images.clear();
    out.val.labels.clear();
  }
  return out;
}

}  // namespace mlai::io
