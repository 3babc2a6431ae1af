// mlai_convert: pack a dataset's original files into mlai's HDF5 format ("mlai-images-1").
//   mlai_convert --from fashion-mnist --out data/fmnist      # data/fmnist-{train,test}.h5
//   mlai_train --dataset hdf5 --data-path data/fmnist-train.h5
//   mlai_convert --from folder --data-dir ~/flowers --size 64 --out data/flowers   # own images
//   mlai_convert --checkpoint run/checkpoints/last.h5 --out last-full.h5  # a sharded one as a file
// Bad flags exit with code 2 and a one-line error; a missing or corrupt input exits with 1.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <tuple>

#include "io/dataset.h"
#include "io/h5dataset.h"
#include "io/image_folder.h"
#include "nn/checkpoint_shards.h"

namespace {

namespace io = mlai::io;
using Clock = std::chrono::steady_clock;

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) b /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

// A line redrawn in place on a terminal; a plain line every quarter otherwise (Slurm logs).
class ProgressLine {
 public:
  ProgressLine(std::string label, bool enabled)
      : label_(std::move(label)), enabled_(enabled), tty_(isatty(fileno(stdout)) != 0) {}
  ~ProgressLine() {
    if (open_) std::printf("\n");  // interrupted by an error: keep the line, end it
  }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void operator()(int64_t done, int64_t total) {
    if (!enabled_) return;
    const int pct = static_cast<int>(100 * done / std::max<int64_t>(total, 1));
    if (tty_) {
      std::printf("\r%s: %lld/%lld images (%d%%)", label_.c_str(), static_cast<long long>(done),
                  static_cast<long long>(total), pct);
      open_ = done < total;
      if (!open_) std::printf("\r\033[K");  // the summary line replaces it
    } else if (pct >= next_pct_ && done < total) {
      std::printf("%s: %lld/%lld images (%d%%)\n", label_.c_str(), static_cast<long long>(done),
                  static_cast<long long>(total), pct);
      while (next_pct_ <= pct) next_pct_ += 25;
    }
    std::fflush(stdout);
  }

 private:
  std::string label_;
  bool enabled_, tty_, open_ = false;
  int next_pct_ = 25;
};

struct Options {
  std::string from, data_dir, out, split = "all";
  std::string checkpoint;  // --checkpoint: consolidate this (sharded) checkpoint into --out
  std::string size;  // --from folder: "HxW" or "N"
  int channels = 0;  // --from folder: 0 (from the files), 1 or 3
  int compression = 0;
  bool progress = true;
  int64_t height = 0, width = 0;  // parsed from size
};

// --size HxW or N (square): positive, at most 8192.
void parse_size(Options& o) {
  if (o.size.empty()) return;
  std::tie(o.height, o.width) = io::parse_image_size(o.size, "--size");
}

void check(const Options& o) {
  auto require = [](bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
  };
  require(o.from.empty() != o.checkpoint.empty(),
          o.from.empty() ? "give --from FORMAT (a data set to pack) or --checkpoint DIR (a sharded "
                           "checkpoint to make one file of)"
                         : "--from and --checkpoint are two different jobs: give one");
  if (!o.checkpoint.empty()) {
    require(mlai::nn::checkpoint_exists(o.checkpoint), "--checkpoint " + o.checkpoint + ": no such checkpoint");
    require(o.out.ends_with(".h5") && !std::filesystem::is_directory(o.out),
            "--checkpoint: --out is the one file to write (FILE.h5), got '" + o.out + "'");
    return;
  }
  require(o.from == "fashion-mnist" || o.from == "mnist" || o.from == "cifar10" ||
              o.from == "cifar100" || o.from == "stl10" || o.from == "svhn" ||
              o.from == "folder",
          "--from '" + o.from +
              "' is unknown (expected fashion-mnist, mnist, cifar10, cifar100, stl10, svhn or "
              "folder)");
  require(o.from == "folder" || (o.size.empty() && o.channels == 0),
          "--size and --channels apply to --from folder only");
  require(o.from != "folder" || !o.data_dir.empty(),
          "--from folder needs --data-dir DIR (DIR/train/<class>/*.png, or DIR/<class>/*.png)");
  require(o.channels == 0 || o.channels == 1 || o.channels == 3,
          "--channels must be 1 or 3, got " + std::to_string(o.channels));
  require(o.split == "train" || o.split == "test" || o.split == "all",
          "--split '" + o.split + "' is unknown (expected train, test or all)");
  require(!o.out.empty() && o.out.back() != '/',
          "--out must be a file name prefix, got '" + o.out + "'");
  require(!o.out.ends_with(".h5"),
          "--out is a prefix (PREFIX-train.h5 and PREFIX-test.h5 are "
          "written): drop '.h5' from '" +
              o.out + "'");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"mlai_convert: pack a dataset into one HDF5 file per split (mlai-images-1)"};
  app.get_formatter()->column_width(30);
  app.add_option("--from", o.from,
                 "Source format: fashion-mnist, mnist (IDX files, plain or .gz), cifar10 or "
                 "cifar100 (binary or torchvision's python versions), stl10 (stl10_binary/), svhn "
                 "(train_32x32.mat, test_32x32.mat), "
                 "or folder (your own "
                 "images, torchvision's ImageFolder layout: DIR/train/<class>/*.png|jpg, "
                 "DIR/test/...)");
  app.add_option("--checkpoint", o.checkpoint,
                 "Instead of packing data: write this checkpoint (a sharded one's directory, "
                 "from mlai_train --state-dict-type sharded) as one checkpoint file, --out "
                 "FILE.h5, as --state-dict-type full writes it (for tools that read one file)");
  app.add_option("--data-dir", o.data_dir,
                 "Directory with the source files (default: /usr/share/datasets/fashion-mnist "
                 "for fashion-mnist, data/<name> otherwise)");
  app.add_option("--out", o.out,
                 "Output prefix: writes PREFIX-train.h5 and PREFIX-test.h5 "
                 "(directories are created)")
      ->required();
  app.add_option("--split", o.split, "Which splits to write: train, test or all")
      ->capture_default_str();
  app.add_option("--size", o.size,
                 "--from folder: resize every image to HxW (or NxN) as torchvision's "
                 "Resize((H, W)) does on PIL images (default: keep the size all images share)");
  app.add_option("--channels", o.channels,
                 "--from folder: 1 (gray) or 3 (RGB) channels (default: 3 if any image is in "
                 "colour, else 1)");
  app.add_option("--compression", o.compression,
                 "gzip level 0-9 (0: none, the fastest to read; 4 is a good trade-off)")
      ->check(CLI::Range(0, 9))
      ->capture_default_str();
  app.add_flag("!--no-progress", o.progress, "No progress line");
  app.footer(
      "Each file holds 'images' (uint8 N x H x W x C, chunks of 64 images), 'labels' (int64 N)\n"
      "and root attributes format, num_classes, class_names, mean, std, source, name.\n"
      "The whole training set goes in PREFIX-train.h5: mlai_train draws the validation set\n"
      "from it (--val-split). Existing files are replaced atomically.\n"
      "Then: mlai_train --dataset hdf5 --data-path PREFIX-train.h5 (finds PREFIX-test.h5)\n");
  try {
    app.parse(argc, argv);
    parse_size(o);
    check(o);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mlai_convert: error: %s (see --help)\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mlai_convert: error: %s\n", e.what());
    return 2;
  }
  const auto start = Clock::now();
  if (!o.checkpoint.empty()) {
    try {
      const int64_t n = mlai::nn::consolidate_checkpoint(o.checkpoint, o.out);
      std::printf("wrote %s: %lld tensors of %s, %s, %.1f s\n", o.out.c_str(),
                  static_cast<long long>(n), o.checkpoint.c_str(),
                  human_bytes(static_cast<double>(std::filesystem::file_size(o.out))).c_str(),
                  std::chrono::duration<double>(Clock::now() - start).count());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mlai_convert: error: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  int64_t images = 0;
  double bytes = 0;
  int files = 0;
  try {
    // --from folder: DIR/train and DIR/test (or DIR/val), or DIR alone as the training split.
    // Both splits take the training split's classes, colour and size (a test image of another
    // size is resized to it), so the files fit one model.
    io::FolderSplits folders;
    std::vector<std::string> train_classes;
    io::PackOptions po;
    if (o.from == "folder") {
      folders = io::image_folder_splits(o.data_dir);
      if (o.split == "test" && folders.test.empty())
        throw std::runtime_error("--split test: " + o.data_dir + " has no test/ or val/ folder");
      const io::ImageFolder train = io::scan_image_folder(folders.train);
      train_classes = train.class_names;
      po.height = o.height, po.width = o.width, po.channels = o.channels;
      po.compression = o.compression;
      po = io::resolve_pack_options(train, po);
    }
    for (const std::string split : {"train", "test"}) {
      if (o.split != "all" && o.split != split) continue;
      if (o.from == "folder" && split == "test" && folders.test.empty()) {
        std::printf("no test split: %s has no test/ or val/ folder\n", o.data_dir.c_str());
        continue;
      }
      const auto t0 = Clock::now();
      const std::string path = o.out + "-" + split + ".h5";
      ProgressLine progress("writing " + path, o.progress);
      io::Dataset d;
      if (o.from == "folder") {
        const io::ImageFolder f = io::scan_image_folder(
            split == "train" ? folders.train : folders.test, train_classes);
        if (!f.skipped.empty())
          std::printf("%s: skipped %zu files that are not .png, .jpg or .jpeg (e.g. %s)\n",
                      f.root.c_str(), f.skipped.size(), f.skipped.front().c_str());
        std::filesystem::path dir = std::filesystem::absolute(o.data_dir).lexically_normal();
        if (dir.filename().empty()) dir = dir.parent_path();  // a trailing '/'
        const std::string name = dir.filename().string();
        d = io::pack_image_folder(f, path, po, name.empty() ? "folder" : name, std::ref(progress));
      } else {
        const std::string dir = o.data_dir.empty() ? io::default_data_dir(o.from) : o.data_dir;
        d = io::load_split(o.from, dir, split);
        io::write_h5_dataset(d, path, o.from + " " + split + " (" + dir + ")", o.compression,
                             std::ref(progress));
      }
      const auto size = static_cast<double>(std::filesystem::file_size(path));
      std::printf("wrote %s: %lld images, %lldx%lldx%lld uint8, %d classes, %s, %.1f s\n",
                  path.c_str(), static_cast<long long>(d.count), static_cast<long long>(d.height),
                  static_cast<long long>(d.width), static_cast<long long>(d.channels),
                  d.num_classes, human_bytes(size).c_str(),
                  std::chrono::duration<double>(Clock::now() - t0).count());
      images += d.count;
      bytes += size;
      ++files;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_convert: error: %s\n", e.what());
    return 1;
  }
  if (files > 1) {
    std::printf("done: %d files, %lld images, %s on disk, %.1f s\n", files,
                static_cast<long long>(images), human_bytes(bytes).c_str(),
                std::chrono::duration<double>(Clock::now() - start).count());
  }
  return 0;
}
