// Image folders: the scan (torchvision's order), a header pass when the colour or size must be
// learnt from the files, then decode + resize in blocks on the kernel pool, streamed to HDF5;
// or, for --dataset folder, decode + resize per sample in the loader's workers.
#include "io/image_folder.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
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
                                 " (height x width): give " + r.size_flag +
                                 " HxW to resize every image to one size");
  }
  return r;
}

std::pair<int64_t, int64_t> parse_image_size(const std::string& text, const std::string& flag) {
  const size_t x = text.find('x');
  const std::string hs = text.substr(0, x), ws = x == std::string::npos ? hs : text.substr(x + 1);
  auto number = [](const std::string& t) {
    if (t.empty() || t.size() > 4 || t.find_first_not_of("0123456789") != std::string::npos)
      return int64_t{0};
    return static_cast<int64_t>(std::stoll(t));
  };
  const int64_t h = number(hs), w = number(ws);
  if (h < 1 || w < 1 || h > 8192 || w > 8192)
    throw std::invalid_argument(flag + " must be HxW or N (pixels, 1 to 8192), got '" + text + "'");
  return {h, w};
}

std::vector<uint8_t> load_folder_image(const ImageFolder& f, int64_t i, const PackOptions& o) {
  ImageInfo in;
  std::vector<uint8_t> img = decode_image(f.files[static_cast<size_t>(i)], o.channels, &in);
  if (in.height != o.height || in.width != o.width)
    img = resize_bilinear(img, in.height, in.width, o.channels, o.height, o.width);
  return img;
}

void ChannelSums::add(const uint8_t* px, int64_t pixels) {
  const auto c = static_cast<int64_t>(sum.size());
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t k = 0; k < c; ++k) {
      const uint64_t v = px[p * c + k];
      sum[static_cast<size_t>(k)] += v;
      squares[static_cast<size_t>(k)] += v * v;
    }
  values += static_cast<uint64_t>(pixels);
}

void ChannelSums::add(const ChannelSums& other) {
  for (size_t k = 0; k < sum.size(); ++k) {
    sum[k] += other.sum[k];
    squares[k] += other.squares[k];
  }
  values += other.values;
}

void ChannelSums::finish(std::vector<float>& mean, std::vector<float>& std) const {
  mean.clear(), std.clear();
  const double n = static_cast<double>(values);
  for (size_t k = 0; k < sum.size(); ++k) {
    const double m = static_cast<double>(sum[k]) / n / 255.0;
    const double var =
        std::max(static_cast<double>(squares[k]) / n / (255.0 * 255.0) - m * m, 0.0);
    mean.push_back(static_cast<float>(m));
    // A channel that never varies would divide by zero: leave it unscaled.
    std.push_back(var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f);
  }
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
  // Channel sums: exact integers, so the same statistics whatever order the blocks add theirs.
  ChannelSums total(channels);
  std::mutex total_mu;
  for (int64_t first = 0; first < n; first += block) {
    const int64_t count = std::min(block, n - first);
    pixels.resize(static_cast<size_t>(count * bytes));
    cpu::parallel_for(count, 8, [&](int64_t b, int64_t e) {
      ChannelSums part(channels);
      for (int64_t k = b; k < e; ++k) {
        const std::vector<uint8_t> img = load_folder_image(f, first + k, r);
        std::copy(img.begin(), img.end(), pixels.begin() + k * bytes);
        part.add(img.data(), height * width);
      }
      const std::lock_guard<std::mutex> lock(total_mu);
      total.add(part);
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
  total.finish(header.mean, header.std);
  out.finish(header, "image folder " + f.root);
  return header;
}

namespace {

// Decodes (and resizes) sample i when the loader asks for it: ImageFolder's loader in the
// loader's worker threads.
class FolderSource : public SampleSource {
 public:
  FolderSource(ImageFolder f, const PackOptions& o) : f_(std::move(f)), o_(o) {}
  int64_t read(int64_t i, uint8_t* pixels) const override {
    const std::vector<uint8_t> img = load_folder_image(f_, i, o_);
    std::copy(img.begin(), img.end(), pixels);
    return f_.labels[static_cast<size_t>(i)];
  }

 private:
  ImageFolder f_;
  PackOptions o_;
};

Dataset streamed(const ImageFolder& f, const PackOptions& o, const std::string& name) {
  Dataset d;
  d.name = name;
  d.count = static_cast<int64_t>(f.files.size());
  d.height = o.height, d.width = o.width, d.channels = o.channels;
  d.num_classes = static_cast<int>(f.class_names.size());
  d.class_names = f.class_names;
  d.labels = f.labels;
  d.source = std::make_shared<FolderSource>(f, o);
  return d;
}

}  // namespace

FolderData load_image_folder(const std::string& dir, const PackOptions& o, int64_t stats_images) {
  namespace cpu = kernels::cpu;
  const FolderSplits splits = image_folder_splits(dir);
  const ImageFolder train = scan_image_folder(splits.train);
  const PackOptions r = resolve_pack_options(train, o);
  fs::path named = fs::absolute(dir).lexically_normal();
  if (named.filename().empty()) named = named.parent_path();  // a trailing '/'
  const std::string name = named.filename().empty() ? "folder" : named.filename().string();
  FolderData out;
  out.train = streamed(train, r, name);
  out.skipped = train.skipped;
  if (!splits.test.empty()) {
    const ImageFolder test = scan_image_folder(splits.test, train.class_names);
    out.test = streamed(test, r, name);  // resized to the training images' size where it differs
    out.skipped.insert(out.skipped.end(), test.skipped.begin(), test.skipped.end());
  } else {
    out.test = out.train;
    out.test.count = 0;
    out.test.labels.clear();
    out.test.rows.clear();
  }
  // The statistics: every training image, or a fixed sample of them (the same for every run,
  // rank and thread count: a seeded choice and exact integer sums).
  const int64_t n = out.train.count;
  std::vector<int64_t> pick = permutation(n, 0x57a75ull);
  out.stats_images = std::min(n, stats_images > 0 ? stats_images : n);
  pick.resize(static_cast<size_t>(out.stats_images));
  std::sort(pick.begin(), pick.end());
  ChannelSums total(r.channels);
  std::mutex total_mu;
  cpu::parallel_for(static_cast<int64_t>(pick.size()), 8, [&](int64_t b, int64_t e) {
    ChannelSums part(r.channels);
    for (int64_t k = b; k < e; ++k) {
      const std::vector<uint8_t> img = load_folder_image(train, pick[static_cast<size_t>(k)], r);
      part.add(img.data(), r.height * r.width);
    }
    const std::lock_guard<std::mutex> lock(total_mu);
    total.add(part);
  });
  total.finish(out.train.mean, out.train.std);
  out.test.mean = out.train.mean;  // the test set is normalized as training images are
  out.test.std = out.train.std;
  return out;
}

}  // namespace mlai::io
