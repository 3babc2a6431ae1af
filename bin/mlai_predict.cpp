// mlai_predict: run a trained model on a file of images and write its logits and predictions.
//   mlai_predict --checkpoint last.h5 --input IMAGES.h5 --output LOGITS.h5
// The model (arch, widths) comes from the checkpoint's config, the class count from its head.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "tensor/device.h"

namespace {

namespace t = mlai::tensor;

// Per-channel statistics: a flag ("0.5,0.5,0.5") or the input file's JSON array attribute.
std::vector<float> channel_stats(const std::string& flag_value, const mlai::io::H5Reader& in,
                                 const char* key, int64_t channels) {
  std::vector<float> v;
  if (!flag_value.empty()) {
    size_t pos = 0;
    while (pos <= flag_value.size()) {
      const size_t end = std::min(flag_value.find(',', pos), flag_value.size());
      v.push_back(std::stof(flag_value.substr(pos, end - pos)));
      pos = end + 1;
    }
  } else if (in.has_attr("/", key)) {
    for (const auto& e : nlohmann::json::parse(in.get_attr_string("/", key))) v.push_back(e.get<float>());
  } else {
    throw std::invalid_argument(in.path() + " has no '" + key + "' attribute: pass --" + key);
  }
  if (static_cast<int64_t>(v.size()) != channels)
    throw std::invalid_argument(std::string("--") + key + " needs one value per channel (" +
                                std::to_string(channels) + ")");
  return v;
}

int run(const std::string& ckpt, const std::string& input, const std::string& output,
        int64_t batch_size, const std::string& device, const std::string& mean_flag,
        const std::string& std_flag) {
  const mlai::nn::Config cfg = mlai::nn::checkpoint_config(ckpt);
  mlai::io::H5Reader in(input);
  if (!in.has("images")) throw std::invalid_argument(input + " has no 'images' dataset");
  const auto info = in.info("images");
  if (info.dtype != mlai::io::H5Type::kUInt8 || info.shape.size() != 4)
    throw std::invalid_argument(input + ": 'images' must be uint8 [N, H, W, C]");
  const int64_t n = info.shape[0], h = info.shape[1], w = info.shape[2], c = info.shape[3];
  const auto mean = channel_stats(mean_flag, in, "mean", c);
  const auto stdv = channel_stats(std_flag, in, "std", c);
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
    mlai::io::H5Reader r(ckpt);
    if (!r.has("model/" + head)) throw std::runtime_error(ckpt + ": no model/" + head);
    classes = r.info("model/" + head).shape.at(0);
  }
  spec.num_classes = static_cast<int>(classes);
  auto model = mlai::nn::make_model(cfg.arch, spec);
  mlai::nn::load_weights(ckpt, *model, {});
  const t::Device dev = t::parse_device(device);
  t::set_current_device(dev);
  model->to(dev);
  model->eval();
  mlai::autograd::NoGradGuard no_grad;

  std::vector<float> logits(static_cast<size_t>(n * classes));
  std::vector<int64_t> preds(static_cast<size_t>(n));
  const int64_t per = h * w * c;
  std::vector<uint8_t> pix;
  for (int64_t first = 0; first < n; first += batch_size) {
    const int64_t b = std::min(batch_size, n - first);
    pix.resize(static_cast<size_t>(b * per));
    in.read_rows("images", mlai::io::H5Type::kUInt8, first, b, pix.data());
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
  mlai::io::H5Writer wr(output);
  wr.write("logits", mlai::io::H5Type::kFloat32, {n, classes}, logits.data());
  wr.write("predictions", mlai::io::H5Type::kInt64, {n}, preds.data());
  wr.set_attr("/", "checkpoint", ckpt);
  wr.set_attr("/", "arch", cfg.arch);
  wr.commit();
  std::printf("%lld images -> %s\n", static_cast<long long>(n), output.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlai_predict: logits and predictions of a trained model on packed images (mlai)"};
  std::string ckpt, input, output, device = "auto", mean, stdv;
  int64_t batch_size = 256;
  app.add_option("--checkpoint", ckpt, "A checkpoint from mlai_train")->required()->check(CLI::ExistingFile);
  app.add_option("--input", input, "HDF5 file with 'images' uint8 [N, H, W, C] (mlai_convert's format)")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--output", output, "HDF5 file to write: 'logits' [N, classes], 'predictions' [N]")->required();
  app.add_option("--batch-size", batch_size, "Images per forward pass")->capture_default_str();
  app.add_option("--device", device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--mean", mean, "Per-channel mean on [0, 1], comma-separated (default: the input's attribute)");
  app.add_option("--std", stdv, "Per-channel std on [0, 1], comma-separated (default: the input's attribute)");
  try {
    app.parse(argc, argv);
    if (batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
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
    return run(ckpt, input, output, batch_size, device, mean, stdv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "mlai_predict: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_predict: error: %s\n", e.what());
    return 1;
  }
}
