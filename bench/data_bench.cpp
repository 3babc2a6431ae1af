// Data-path throughput: images/s that the loader delivers (workers assembling uint8 batches,
// then augmentation and normalisation) with 1 and 2 workers, for 28x28x1 and 32x32x3 images
// read from IDX (in memory), CIFAR-10 binary (in memory), packed HDF5 (streamed from the
// file) and PNG files (--dataset folder: decoded by the workers; also 64x64 files resized to
// 32x32), with random crop + flip. Files are written once into a temporary directory.
//   build/bench/mlai_bench_data
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/dataset.h"
#include "io/h5dataset.h"
#include "io/image_encode.h"
#include "io/image_resize.h"
#include "io/loader.h"

namespace {

namespace fs = std::filesystem;

struct Files {
  fs::path dir;
  Files() {
    dir = fs::temp_directory_path() / ("mlai_bench_data_" + std::to_string(::getpid()));
    fs::create_directories(dir / "idx");
    fs::create_directories(dir / "cifar");
    std::mt19937 rng(1);
    auto bytes = [&](size_t n) {
      std::string s(n, '\0');
      for (auto& ch : s) ch = static_cast<char>(rng() & 0xff);
      return s;
    };
    auto be32 = [](uint32_t v) {
      return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    };
    const uint32_t n = 20000;
    for (const char* split : {"train", "t10k"}) {
      const uint32_t m = std::string(split) == "train" ? n : 1000;
      std::ofstream(dir / "idx" / (std::string(split) + "-images-idx3-ubyte"), std::ios::binary)
          << be32(0x803) << be32(m) << be32(28) << be32(28) << bytes(size_t{m} * 784);
      std::string labels = be32(0x801) + be32(m);
      for (uint32_t i = 0; i < m; ++i) labels += static_cast<char>(rng() % 10);
      std::ofstream(dir / "idx" / (std::string(split) + "-labels-idx1-ubyte"), std::ios::binary)
          << labels;
    }
    // CIFAR: 5 training batches of 2000 records and a test batch.
    for (int b = 1; b <= 6; ++b) {
      const std::string name = b <= 5 ? "data_batch_" + std::to_string(b) + ".bin" : "test_batch.bin";
      std::string rec;
      for (int i = 0; i < 2000; ++i) rec += static_cast<char>(rng() % 10) + bytes(3072);
      std::ofstream(dir / "cifar" / name, std::ios::binary) << rec;
    }
    const auto fm = mlai::io::load_dataset("mnist", (dir / "idx").string(), 0.0, 1);
    mlai::io::write_h5_dataset(fm.train, (dir / "mnist-train.h5").string(), "bench");
    const auto cf = mlai::io::load_dataset("cifar10", (dir / "cifar").string(), 0.0, 1);
    mlai::io::write_h5_dataset(cf.train, (dir / "cifar-train.h5").string(), "bench");
    // The CIFAR-like training images as PNG files in ImageFolder's layout, at 32x32 and 64x64.
    for (const int side : {32, 64}) {
      const fs::path root = dir / ("png" + std::to_string(side));
      for (int64_t i = 0; i < cf.train.count; ++i) {
        const auto at = cf.train.images.begin() + i * 3072;
        mlai::io::Picture p{side, side, 3, {at, at + 3072}};
        if (side != 32) p.pixels = mlai::io::resize_bilinear(p.pixels, 32, 32, 3, side, side);
        const fs::path cls = root / std::to_string(cf.train.labels[static_cast<size_t>(i)]);
        fs::create_directories(cls);
        std::ofstream(cls / (std::to_string(i) + ".png"), std::ios::binary)
            << mlai::io::encode_png(p);
      }
    }
  }
  ~Files() { fs::remove_all(dir); }
};

const Files& files() {
  static const Files f;
  return f;
}

// source: 0 IDX (28x28x1), 1 CIFAR binary (32x32x3), 2 HDF5 28x28x1, 3 HDF5 32x32x3,
// 4 PNG files 32x32x3, 5 PNG files 64x64x3 resized to 32x32.
void BM_Loader(benchmark::State& state) {
  const int source = static_cast<int>(state.range(0));
  const int workers = static_cast<int>(state.range(1));
  const Files& f = files();
  mlai::io::DataSplits d;
  switch (source) {
    case 0: d = mlai::io::load_dataset("mnist", (f.dir / "idx").string(), 0.0, 1); break;
    case 1: d = mlai::io::load_dataset("cifar10", (f.dir / "cifar").string(), 0.0, 1); break;
    case 2: d = mlai::io::load_dataset("hdf5", "", 0.0, 1, (f.dir / "mnist-train.h5").string(), false); break;
    case 3: d = mlai::io::load_dataset("hdf5", "", 0.0, 1, (f.dir / "cifar-train.h5").string(), false); break;
    default: {
      mlai::io::FolderOptions fo;
      fo.height = fo.width = 32;
      fo.stats_images = 16;
      d = mlai::io::load_dataset("folder", (f.dir / (source == 4 ? "png32" : "png64")).string(),
                                 0.0, 1, "", false, fo);
    }
  }
  mlai::io::LoaderOptions o;
  o.batch_size = 256;
  o.workers = workers;
  o.augment_pad = d.train.height == 32 ? 4 : 2;
  o.augment_flip = true;
  o.limit_batches = 20;
  mlai::io::Loader loader(d.train, o);
  // Validate before timing: batches come out with the right shape and finite values.
  loader.start_epoch(0);
  auto first = loader.next();
  if (!first || first->images.shape() != mlai::tensor::Shape{256, d.train.height, d.train.width, d.train.channels}) {
    state.SkipWithError("validation failed: wrong batch shape");
    return;
  }
  int64_t images = 0, epoch = 1;
  for (auto _ : state) {
    loader.start_epoch(epoch++);
    while (auto b = loader.next()) images += b->labels.numel();
  }
  state.counters["images_per_sec"] = benchmark::Counter(static_cast<double>(images), benchmark::Counter::kIsRate);
  state.counters["workers"] = workers;
  const char* labels[] = {"idx 28x28x1",         "cifar-bin 32x32x3",   "hdf5-stream 28x28x1",
                          "hdf5-stream 32x32x3", "png-folder 32x32x3",  "png-folder 64x64x3 -> 32"};
  state.SetLabel(std::string(labels[source]) + ", crop+flip");
}
BENCHMARK(BM_Loader)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {1, 2}})->ArgNames({"source", "workers"})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
