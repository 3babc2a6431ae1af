// Image folders: the scan (torchvision's order), a header pass when the colour or size must be
// learnt from the files, then decode + resize in blocks on the kernel pool, streamed to HDF5.
#include "io/image_folder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "io/image_decode.h"
#include "io/image_resize.h"
#include "kernels/parallel.h"

namespace mlai::io {
namespace {

namespace fs = std::filesystem;

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

std::string size_text(const ImageInfo& i) {  // HxW, as --size takes it
  return std::to_string(i.height) + "x" + std::to_string(i.width);
}

}  // namespace

std::vector<std::string> list_image_files(const std::string& dir,
                                          std::vector<std::string>* skipped) {
  // (folder, name) pairs sorted: os.walk's folders in order, each folder's files by name.
  std::vector<std::pair<std::string, std::string>> found;
  for (auto it =
           fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    if (is_image_file(it->path().string()))
      found.emplace_back(it->path().parent_path().string(), it->path().filename().string());
    else if (skipped)
      skipped->push_back(it->path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> files;
  for (const auto& [folder, name] : found) files.push_back((fs::path(folder) / name).string());
  return files;
}

ImageFolder scan_image_folder(const std::string& root, const std::vector<std::string>& classes) {
  if (!fs::is_directory(root))
    throw std::runtime_error("image folder " + root + " is not a directory");
  ImageFolder f;
  f.root = root;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && !hidden(e.path())) f.class_names.push_back(e.path().filename());
  std::sort(f.class_names.begin(), f.class_names.end());
  if (f.class_names.empty())
    throw std::runtime_error("image folder " + root + " has no class folders (expected " + root +
                             "/<class>/<image>.png or .jpg)");
  for (const std::string& cls : f.class_names) {
    int64_t label = 0;
    if (classes.empty()) {
      label = std::find(f.class_names.begin(), f.class_names.end(), cls) - f.class_names.begin();
    } else {
      const auto at = std::find(classes.begin(), classes.end(), cls);
      if (at == classes.end())
        throw std::runtime_error("image folder " + root + ": class '" + cls +
                                 "' is not one of the training set's classes");
      label = at - classes.begin();
    }
    const std::vector<std::string> found =
        list_image_files((fs::path(root) / cls).string(), &f.skipped);
    if (found.empty())
      throw std::runtime_error("image folder " + root + ": class folder '" + cls +
                               "' holds no .png, .jpg or .jpeg files");
    for (const std::string& file : found) {
      f.files.push_back(file);
      f.labels.push_back(label);
    }
  }
  if (!classes.empty()) f.class_names = classes;
  return f;
}

FolderSplits image_folder_splits(const std::string& dir) {
  if (!fs::is_directory(dir))
    throw std::runtime_error("image folder " + dir + " is not a directory");
  const fs::path d(dir);
  if (!fs::is_directory(d / "train")) return {dir, ""};
  for (const char* test : {"test", "val"})
    if (fs::is_directory(d / test)) return {(d / "train").string(), (d / test).string()};
  return {(d / "train").string(), ""};
}

PackOptions resolve_pack_options(const ImageFolder& f, const PackOptions& o) {
  namespace cpu = kernels::cpu;
  const auto n = static_cast<int64_t>(f.files.size());
  if (n == 0) throw std::runtime_error("image folder " + f.root + " holds no images");
  if (o.channels != 0 && o.channels != 1 && o.channels != 3)
    throw std::invalid_argument("channels must be 1 or 3, got " + std::to_string(o.channels));
  PackOptions r = o;
  if (r.channels != 0 && r.height != 0) return r;
  std::vector<ImageInfo> info(static_cast<size_t>(n));
  cpu::parallel_for(n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      info[static_cast<size_t>(i)] = read_image_info(f.files[static_cast<size_t>(i)]);
  });
  if (r.channels == 0)
    r.channels =
        std::any_of(info.begin(), info.end(), [](auto& i) { return i.channels == 3; }) ? 3 : 1;
  if (r.height == 0) {
    r.height = info[0].height, r.width = info[0].width;
    for (int64_t i = 1; i < n; ++i)
      if (info[static_cast<size_t>(i)].height != r.height ||
          info[static_cast<size_t>(i)].width != r.width)
        throw std::runtime_error("image " + f.files[static_cast<size_t>(i)] + " is " +
                                 size_text(info[static_cast<size_t>(i)]) + " but " + f.files[0] +
                                 " is " + size_text(info[0]) +
                                 " (height x width): give --size HxW to resize every image "
                                 "to one size");
  }
  return r;
}

Dataset pack_image_folder(const ImageFolder& f, const std::string& path, const PackOptions& o,
                          const std::string& name, const WriteProgress& progress) {
  namespace cpu = kernels::cpu;
  const PackOptions r = resolve_pack_options(f, o);  // checks f has images and o's channels
  const auto n = static_cast<int64_t>(f.files.size());
  const int channels = r.channels;
  const int64_t height = r.height, width = r.width;
  const int64_t bytes = height * width * channels;
  H5DatasetWriter out(path, n, height, width, channels, o.compression);
  const int64_t block = kH5ImagesPerChunk * 64;
  std::vector<uint8_t> pixels;
  // Per-image channel sums of pixels and of their squares, exact integers, added in image
  // order: the same statistics for any thread count.
  std::vector<uint64_t> sums(static_cast<size_t>(n * channels * 2));
  for (int64_t first = 0; first < n; first += block) {
    const int64_t count = std::min(block, n - first);
    pixels.resize(static_cast<size_t>(count * bytes));
    cpu::parallel_for(count, 8, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t i = first + k;
        ImageInfo in;
        std::vector<uint8_t> img = decode_image(f.files[static_cast<size_t>(i)], channels, &in);
        if (in.height != height || in.width != width)
          img = resize_bilinear(img, in.height, in.width, channels, height, width);
        std::copy(img.begin(), img.end(), pixels.begin() + k * bytes);
        uint64_t* s = &sums[static_cast<size_t>(i * channels * 2)];
        for (int64_t p = 0; p < height * width; ++p)
          for (int c = 0; c < channels; ++c) {
            const uint32_t v = img[static_cast<size_t>(p * channels + c)];
            s[2 * c] += v;
            s[2 * c + 1] += v * v;
          }
      }
    });
    out.write(first, count, pixels.data());
    if (progress) progress(first + count, n);
  }
  Dataset header;
  header.name = name;
  header.count = n, header.height = height, header.width = width, header.channels = channels;
  header.num_classes = static_cast<int>(f.class_names.size());
  header.class_names = f.class_names;
  header.labels = f.labels;
  const double values = static_cast<double>(n * height * width);
  for (int c = 0; c < channels; ++c) {
    uint64_t sum = 0, squares = 0;  // exact up to 2^48 pixel values
    for (int64_t i = 0; i < n; ++i) {
      sum += sums[static_cast<size_t>((i * channels + c) * 2)];
      squares += sums[static_cast<size_t>((i * channels + c) * 2 + 1)];
    }
    const double mean = static_cast<double>(sum) / values / 255.0;
    const double var =
        std::max(static_cast<double>(squares) / values / (255.0 * 255.0) - mean * mean, 0.0);
    header.mean.push_back(static_cast<float>(mean));
    // A channel that never varies would divide by zero: leave it unscaled.
    header.std.push_back(var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f);
  }
  out.finish(header, "image folder " + f.root);
  return header;
}

}  // namespace mlai::io
