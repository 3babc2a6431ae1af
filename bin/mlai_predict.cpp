// mlai_predict: run a trained model on images and write its logits and predictions.
//   mlai_predict --checkpoint best.h5 --input IMAGES.h5 --output LOGITS.h5
//   mlai_predict --checkpoint best.h5 --input new_photos/ --output predictions.csv
//   mlai_predict --checkpoint best.h5 --input t10k-images-idx3-ubyte.gz --output test.csv
// The model (arch, widths) comes from the checkpoint's config, the class count from its head,
// the input size, normalization and class names from what it was trained on.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "io/h5file.h"
#include "io/idx.h"
#include "io/image_decode.h"
#include "io/image_folder.h"
#include "io/image_resize.h"
#include "io/metrics.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "tensor/device.h"

namespace {

namespace t = mlai::tensor;

// Per-channel statistics: a flag ("0.5,0.5,0.5") or the input file's JSON array attribute.
std::vector<float> channel_stats(const std::string& flag_value, const mlai::io::H5Reader* in,
                                 const char* key, int64_t channels) {
  std::vector<float> v;
  if (!flag_value.empty()) {
    size_t pos = 0;
    while (pos <= flag_value.size()) {
      const size_t end = std::min(flag_value.find(',', pos), flag_value.size());
      v.push_back(std::stof(flag_value.substr(pos, end - pos)));
      pos = end + 1;
    }
  } else if (in && in->has_attr("/", key)) {
    for (const auto& e : nlohmann::json::parse(in->get_attr_string("/", key)))
      v.push_back(e.get<float>());
  } else {
    throw std::invalid_argument(std::string("no training statistics in the checkpoint") +
                                (in ? " and no '" + std::string(key) + "' attribute in " + in->path()
                                    : "") +
                                ": pass --" + key);
  }
  if (static_cast<int64_t>(v.size()) != channels)
    throw std::invalid_argument(std::string("--") + key + " needs one value per channel (" +
                                std::to_string(channels) + ")");
  return v;
}

// The image files of --input: the file itself, or every image under the folder, in
// mlai_convert's order.
std::vector<std::string> image_files(const std::string& input) {
  if (!std::filesystem::is_directory(input)) return {input};
  std::vector<std::string> files = mlai::io::list_image_files(input);
  if (files.empty())
    throw std::invalid_argument("--input " + input + " holds no .png, .jpg or .jpeg files");
  return files;
}

// Whether `path` starts with HDF5's signature (else it is taken for an IDX file).
bool is_hdf5(const std::string& path) {
  static const char kSignature[8] = {'\x89', 'H', 'D', 'F', '\r', '\n', '\x1a', '\n'};
  char head[8] = {};
  std::ifstream f(path, std::ios::binary);
  return f.read(head, 8) && std::equal(head, head + 8, kSignature);
}

struct Options {
  std::string ckpt, input, output, device = "auto", mean, stdv;
  int64_t batch_size = 256;
};

int run(const Options& o) {
  namespace fs = std::filesystem;
  const mlai::nn::Config cfg = mlai::nn::checkpoint_config(o.ckpt);
  mlai::nn::DataInfo data;
  const bool have_data = mlai::nn::checkpoint_data(o.ckpt, &data);
  // The images: an mlai-images file, an IDX images file (MNIST's, plain or gzipped), or image
  // files decoded and resized as for training.
  const bool from_files = fs::is_directory(o.input) || mlai::io::is_image_file(o.input);
  std::unique_ptr<mlai::io::H5Reader> in;
  mlai::io::IdxArray idx;
  std::vector<std::string> files;
  int64_t n = 0, h = 0, w = 0, c = 0;
  if (from_files) {
    if (!have_data)
      throw std::invalid_argument(o.ckpt + " does not say its input size (written by an older "
                                  "mlai): pack the images with mlai_convert --from folder --size "
                                  "HxW and pass that file");
    files = image_files(o.input);
    n = static_cast<int64_t>(files.size());
    h = data.height, w = data.width, c = data.channels;
  } else if (!is_hdf5(o.input)) {
    try {
      idx = mlai::io::read_idx(o.input, 3);
    } catch (const std::runtime_error& e) {
      throw std::invalid_argument(
          "--input " + o.input +
          " is neither HDF5 (mlai_convert's images), an IDX images file, a PNG/JPEG file nor a "
          "folder of them (as IDX: " + e.what() + ")");
    }
    n = idx.dims[0], h = idx.dims[1], w = idx.dims[2], c = 1;
  } else {
    in = std::make_unique<mlai::io::H5Reader>(o.input);
    if (!in->has("images")) throw std::invalid_argument(o.input + " has no 'images' dataset");
    const auto info = in->info("images");
    if (info.dtype != mlai::io::H5Type::kUInt8 || info.shape.size() != 4)
      throw std::invalid_argument(o.input + ": 'images' must be uint8 [N, H, W, C]");
    n = info.shape[0], h = info.shape[1], w = info.shape[2], c = info.shape[3];
  }
  if (!from_files && have_data && (h != data.height || w != data.width || c != data.channels))
    throw std::invalid_argument(
        "--input " + o.input + " holds " + std::to_string(h) + "x" + std::to_string(w) + "x" +
        std::to_string(c) + " images; " + o.ckpt + "'s model was trained on " +
        std::to_string(data.height) + "x" + std::to_string(data.width) + "x" +
        std::to_string(data.channels) + " (image files are resized to it; packed ones are not)");
  // Normalization: the flags, else the training set's (in the checkpoint), else the file's.
  auto stats = [&](const std::string& flag, const std::vector<float>& trained, const char* key) {
    if (!flag.empty() || !have_data || static_cast<int64_t>(trained.size()) != c)
      return channel_stats(flag, in.get(), key, c);
    return trained;
  };
  const auto mean = stats(o.mean, data.mean, "mean");
  const auto stdv = stats(o.stdv, data.std, "std");
  mlai::nn::ModelSpec spec;
  spec.height = h;
  spec.width = w;
  spec.channels = c;
  spec.hidden = cfg.hidden;
  spec.dropout = cfg.dropout;
  // The class count: the length of the model's last parameter (the head's bias) in the file.
  const std::string head = mlai::nn::make_model(cfg.arch, spec)->named_parameters().back().first;
  int64_t classes = 0;
  {
    const mlai::nn::CheckpointReader r(o.ckpt);
    if (!r.has("model/" + head)) throw std::runtime_error(o.ckpt + ": no model/" + head);
    classes = r.info("model/" + head).shape.at(0);
  }
  spec.num_classes = static_cast<int>(classes);
  auto model = mlai::nn::make_model(cfg.arch, spec);
  mlai::nn::load_weights(o.ckpt, *model, {});
  const t::Device dev = t::parse_device(o.device);
  t::set_current_device(dev);
  model->to(dev);
  model->eval();
  mlai::autograd::NoGradGuard no_grad;

  std::vector<float> logits(static_cast<size_t>(n * classes));
  std::vector<int64_t> preds(static_cast<size_t>(n));
  const int64_t per = h * w * c;
  std::vector<uint8_t> pix;
  for (int64_t first = 0; first < n; first += o.batch_size) {
    const int64_t b = std::min(o.batch_size, n - first);
    pix.resize(static_cast<size_t>(b * per));
    if (in) {
      in->read_rows("images", mlai::io::H5Type::kUInt8, first, b, pix.data());
    } else if (!idx.data.empty()) {
      std::copy_n(idx.data.begin() + first * per, b * per, pix.begin());
    } else {
      for (int64_t i = 0; i < b; ++i) {
        mlai::io::ImageInfo got;
        std::vector<uint8_t> img =
            mlai::io::decode_image(files[static_cast<size_t>(first + i)], static_cast<int>(c), &got);
        if (got.height != h || got.width != w)
          img = mlai::io::resize_bilinear(img, got.height, got.width, c, h, w);
        std::copy(img.begin(), img.end(), pix.begin() + i * per);
      }
    }
    std::vector<float> x(pix.size());
    for (size_t i = 0; i < pix.size(); ++i) {
      const size_t ch = i % static_cast<size_t>(c);
      x[i] = (static_cast<float>(pix[i]) / 255.0f - mean[ch]) / stdv[ch];
    }
    const auto out = (*model)(mlai::nn::Variable(t::Tensor::from_vector(x, {b, h, w, c}, dev)))
                         .data().to(t::Device::cpu()).to_vector<float>();
    for (int64_t i = 0; i < b; ++i) {
      const float* row = out.data() + i * classes;
      int64_t best = 0;
      for (int64_t k = 1; k < classes; ++k)
        if (row[k] > row[best]) best = k;
      preds[static_cast<size_t>(first + i)] = best;
      std::copy(row, row + classes, logits.begin() + (first + i) * classes);
    }
  }
  const bool names = have_data && static_cast<int64_t>(data.class_names.size()) == classes;
  if (o.output.size() > 4 && o.output.compare(o.output.size() - 4, 4, ".csv") == 0) {
    // One row per image: its file (or index), the predicted class and its softmax probability.
    const std::string tmp = o.output + ".tmp";
    fs::remove(tmp);
    struct RemoveOnError {  // a failed write leaves no .tmp behind
      const std::string& path;
      bool done = false;
      ~RemoveOnError() {
        std::error_code ec;
        if (!done) fs::remove(path, ec);
      }
    } guard{tmp};
    {
      mlai::io::CsvLogger csv(tmp, {"index", "file", "prediction", "class", "probability"});
      for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data() + i * classes;
        const int64_t p = preds[static_cast<size_t>(i)];
        double sum = 0;
        for (int64_t k = 0; k < classes; ++k) sum += std::exp(double(row[k]) - double(row[p]));
        csv.log({{"index", i},
                 {"file", from_files ? files[static_cast<size_t>(i)] : std::string()},
                 {"prediction", p},
                 {"class", names ? data.class_names[static_cast<size_t>(p)] : std::to_string(p)},
                 {"probability", 1.0 / sum}});
      }
    }
    fs::rename(tmp, o.output);
    guard.done = true;
  } else {
    mlai::io::H5Writer wr(o.output);
    wr.write("logits", mlai::io::H5Type::kFloat32, {n, classes}, logits.data());
    wr.write("predictions", mlai::io::H5Type::kInt64, {n}, preds.data());
    wr.set_attr("/", "checkpoint", o.ckpt);
    wr.set_attr("/", "arch", cfg.arch);
    if (names) wr.set_attr("/", "class_names", nlohmann::json(data.class_names).dump());
    if (from_files) wr.set_attr("/", "files", nlohmann::json(files).dump());
    wr.commit();
  }
  std::printf("%lld images -> %s\n", static_cast<long long>(n), o.output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlai_predict: a trained model's predictions on packed images or image files (mlai)"};
  Options o;
  app.add_option("--checkpoint", o.ckpt,
                 "A checkpoint from mlai_train (a file, or a sharded checkpoint's directory)")
      ->required()
      ->check(CLI::ExistingPath);
  app.add_option("--input", o.input,
                 "HDF5 file with 'images' uint8 [N, H, W, C] (mlai_convert's format), an IDX "
                 "images file (MNIST's t10k-images-idx3-ubyte, plain or .gz), or a PNG/JPEG "
                 "file, or a folder of them (at any depth), decoded and resized to the model's "
                 "input as mlai_convert --from folder --size does")
      ->required()
      ->check(CLI::ExistingPath);
  app.add_option("--output", o.output,
                 "FILE.csv: a row per image (index, file, prediction, class, probability); "
                 "otherwise HDF5: 'logits' [N, classes], 'predictions' [N]")
      ->required();
  app.add_option("--batch-size", o.batch_size, "Images per forward pass")->capture_default_str();
  app.add_option("--device", o.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--mean", o.mean,
                 "Per-channel mean on [0, 1], comma-separated (default: the training set's, from "
                 "the checkpoint)");
  app.add_option("--std", o.stdv,
                 "Per-channel std on [0, 1], comma-separated (default: the training set's, from "
                 "the checkpoint)");
  try {
    app.parse(argc, argv);
    if (o.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mlai_predict: error: %s (see --help)\n", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mlai_predict: error: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mlai_predict: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_predict: error: %s\n", e.what());
    return 1;
  }
}
