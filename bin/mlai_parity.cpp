// mlai_parity: compares a ResNet (resnet18_cifar unless the goldens name another) with PyTorch on the goldens of tools/parity_resnet.py
// (eval-mode logits, train-mode logits, every tensor after one SGD step) and prints the max
// absolute and relative error of each. Exit 0 when all are within the bounds, 1 otherwise.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "tensor/device.h"
#include "tensor/ops.h"

namespace {

namespace t = mlai::tensor;
using mlai::io::H5Type;

struct Err {
  double abs = 0, scale = 0;
  double rel() const { return scale > 0 ? abs / scale : abs; }
};

// Max |mine - ref| and max |ref| (at least `floor`): the relative error is measured against the
// quantity's scale. In float64 the floor is kZeroScale: a tensor that is zero in exact
// arithmetic holds only rounding residue (1e-18), against which a relative measure is noise. In
// MobileNetV2 a batch norm's bias, or running mean, whose every path downstream ends in another
// training-mode batch norm (which no per-channel shift changes) gets no gradient: exactly 0.
// Float32 keeps no floor, as PyTorch's yardstick (tools/parity_resnet.py) is measured.
constexpr double kZeroScale = 1e-3;
Err compare(const std::vector<double>& mine, const std::vector<double>& ref, double floor = 0) {
  Err e;
  e.scale = floor;
  for (size_t i = 0; i < ref.size(); ++i) {
    e.abs = std::max(e.abs, std::abs(mine[i] - ref[i]));
    e.scale = std::max(e.scale, std::abs(ref[i]));
  }
  return e;
}

std::vector<double> read_f64(const mlai::io::H5Reader& r, const std::string& name, int64_t numel) {
  std::vector<double> v(static_cast<size_t>(numel));
  r.read(name, H5Type::kFloat64, v.data(), numel);
  return v;
}

// torch_fp32: PyTorch's own float32 error on the same quantity (negative: not in the goldens).
// A float32 result passes within the bound, or within twice PyTorch's float32 error: a tensor
// that one SGD step moves only slightly from zero (a batch-norm bias) has a large relative error
// in any float32 implementation, PyTorch's included.
bool report(const char* what, const Err& e, double bound, double torch_fp32,
            const std::string& worst = "") {
  const double allowed = std::max(bound, 2 * torch_fp32);
  const bool ok = e.rel() <= allowed;
  std::printf("%-14s max abs %.3e  max rel %.3e  (bound %.0e", what, e.abs, e.rel(), bound);
  if (torch_fp32 >= 0) std::printf("; PyTorch float32 %.3e", torch_fp32);
  std::printf(")  %s%s\n", ok ? "ok" : "FAIL", worst.empty() ? "" : ("  worst: " + worst).c_str());
  return ok;
}

int run(const std::string& weights, const std::string& golden, const std::string& device,
        double logit_bound, double weight_bound, bool f64) {
  mlai::io::H5Reader g(golden);
  const auto shape = g.info("images").shape;  // [n, h, w, c]
  const int64_t n = shape.at(0);
  mlai::nn::ModelSpec spec;
  spec.height = shape.at(1);
  spec.width = shape.at(2);
  spec.channels = shape.at(3);
  spec.num_classes = 10;
  // The architecture the goldens were made with (files from before the attribute: resnet18_cifar).
  const std::string arch =
      g.has_attr("/", "arch") ? g.get_attr_string("/", "arch") : std::string("resnet18_cifar");
  std::printf("%s, batch %lld\n", arch.c_str(), static_cast<long long>(n));
  if (f64)
    std::printf("float64: each tensor after the step measured against max(|ref|, %g)\n",
                kZeroScale);
  auto model = mlai::nn::make_model(arch, spec);
  mlai::nn::load_weights(weights, *model, {});
  const t::Device dev = t::parse_device(device);
  t::set_current_device(dev);
  model->to(dev);
  if (f64) {  // the same network in float64: against PyTorch's float64 goldens, only the
              // summation order differs (no ReLU near zero flips sign between the two)
    for (auto& [name, v] : model->named_parameters()) {
      t::Tensor& d = const_cast<mlai::autograd::Variable&>(v).data();
      d = t::cast(d, t::DType::kFloat64);
    }
    for (auto& [name, b] : model->named_buffers())
      if (b->dtype() == t::DType::kFloat32) *b = t::cast(*b, t::DType::kFloat64);
  }
  std::vector<float> x(static_cast<size_t>(g.info("images").numel()));
  g.read("images", H5Type::kFloat32, x.data(), shape);
  std::vector<int64_t> y(static_cast<size_t>(n));
  g.read("labels", H5Type::kInt64, y.data(), n);
  t::Tensor images = t::Tensor::from_vector(x, shape, dev);
  if (f64) images = t::cast(images, t::DType::kFloat64);
  const mlai::nn::Variable input(images);
  const t::Tensor labels = t::Tensor::from_vector(y, {n}, dev);
  const int64_t nl = n * spec.num_classes;
  auto host = [](const t::Tensor& v) {
    return t::cast(v.to(t::Device::cpu()), t::DType::kFloat64).to_vector<double>();
  };

  // PyTorch's float32 errors, from goldens written since they were added (float32 mode only).
  auto torch_fp32 = [&](const std::string& what) {
    const std::string name = "torch_fp32_" + what;
    return !f64 && g.has_attr("/", name) ? g.get_attr_double("/", name) : -1.0;
  };
  bool ok = true;
  model->eval();
  {
    mlai::autograd::NoGradGuard no_grad;
    ok &= report("logits (eval)",
                 compare(host((*model)(input).data()), read_f64(g, "logits_eval", nl)), logit_bound,
                 torch_fp32("logits_eval"));
  }
  model->train();
  const auto logits = (*model)(input);
  ok &= report("logits (train)", compare(host(logits.data()), read_f64(g, "logits_train", nl)),
               logit_bound, torch_fp32("logits_train"));
  const double lr = g.get_attr_double("/", "lr");
  model->zero_grad();
  mlai::autograd::cross_entropy(logits, labels).backward();
  if (f64) {  // plain SGD by hand (the optimizers keep float32 masters): p -= lr * grad
    for (auto& [name, v] : model->named_parameters()) {
      t::Tensor& d = const_cast<mlai::autograd::Variable&>(v).data();
      t::axpy_(-lr, v.grad(), d);
    }
  } else {
    mlai::nn::OptimizerConfig oc;
    oc.name = "sgd";
    oc.lr = lr;
    auto opt = mlai::nn::make_optimizer(model->named_parameters(), oc);
    opt->step();
  }

  // Every parameter and float buffer after the step (BN running statistics included).
  Err worst_p, worst_b;
  std::string worst_p_name, worst_b_name;
  auto check = [&](const std::string& name, const t::Tensor& v, Err& worst,
                   std::string& worst_name) {
    const Err e = compare(host(v), read_f64(g, "after/" + name, v.numel()), f64 ? kZeroScale : 0);
    if (e.rel() >= worst.rel()) worst = e, worst_name = name;
  };
  for (auto& [name, p] : model->named_parameters()) check(name, p.data(), worst_p, worst_p_name);
  for (auto& [name, b] : model->named_buffers()) {
    if (b->dtype() == t::DType::kInt64) {
      std::vector<int64_t> want(1);
      g.read("after/" + name, H5Type::kInt64, want.data(), 1);
      if (b->to(t::Device::cpu()).to_vector<int64_t>().at(0) != want[0]) {
        std::printf("%s differs: %lld in PyTorch\n", name.c_str(), static_cast<long long>(want[0]));
        ok = false;
      }
      continue;
    }
    check(name, *b, worst_b, worst_b_name);
  }
  ok &= report("params (step)", worst_p, weight_bound, torch_fp32("params"), worst_p_name);
  ok &= report("buffers (step)", worst_b, weight_bound, torch_fp32("buffers"), worst_b_name);
  std::printf("%s\n", ok ? "parity: PASS" : "parity: FAIL");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlai_parity: a ResNet against PyTorch goldens (tools/parity_resnet.py)"};
  std::string weights, golden, device = "cpu";
  double logit_bound = 1e-4, weight_bound = 1e-5;
  std::string dtype = "float32";
  app.add_option("--weights", weights, "weights.h5 from parity_resnet.py")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--golden", golden, "golden.h5 from parity_resnet.py")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--device", device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  app.add_option("--logit-bound", logit_bound, "Max relative error of the logits")
      ->capture_default_str();
  app.add_option("--weight-bound", weight_bound, "Max relative error after the step")
      ->capture_default_str();
  app.add_option("--dtype", dtype,
                 "float32 (what training runs), or float64: the implementation alone, to 1e-10")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "mlai_parity: error: %s (see --help)\n", e.what());
    return 2;
  }
  try {
    return run(weights, golden, device, logit_bound, weight_bound, dtype == "float64");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_parity: error: %s\n", e.what());
    return 1;
  }
}
