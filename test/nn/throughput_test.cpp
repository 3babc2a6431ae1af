// Throughput (Lightning's ThroughputMonitor): the models' FLOPs as autograd counts them are
// torch.utils.flop_counter.FlopCounterMode's for the same models and batches, the peak table
// names the right figures, and the trainer logs each epoch's TFLOP/s per device.
#include "nn/throughput.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "nn/experiment.h"
#include "nn/models.h"
#include "tensor/ops.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

struct Counts {
  int64_t forward, training;  // a forward; a forward and the backward of sum(output)
};

// One batch through the model in training mode, counted.
Counts count(const std::string& arch, int64_t batch, int64_t hw, int64_t channels,
             int num_classes) {
  ModelSpec s;
  s.height = s.width = hw;
  s.channels = channels;
  s.num_classes = num_classes;
  auto m = make_model(arch, s);
  m->train();
  tensor::Generator gen(5);
  const Tensor x = Tensor::uniform({batch, hw, hw, channels}, -1.0, 1.0, gen, DType::kFloat32);
  Counts c{};
  {
    autograd::NoGradGuard no_grad;
    const int64_t before = autograd::flop_count();
    (*m)(Variable(x));
    c.forward = autograd::flop_count() - before;
  }
  const int64_t before = autograd::flop_count();
  autograd::sum((*m)(Variable(x))).backward();
  c.training = autograd::flop_count() - before;
  return c;
}

// FlopCounterMode's totals (PyTorch 2.15, tools/torch_interop.py's models, the same batches:
// `with FlopCounterMode() as fc: y = model(x); y.sum().backward()`).
TEST(Throughput, ModelsCountAsTorchsFlopCounterMode) {
  const struct {
    const char* arch;
    int64_t batch, hw, channels;
    int classes;
    int64_t forward, training;
  } cases[] = {
      {"mlp", 4, 28, 1, 10, 1085440, 2453504},
      {"resnet20", 2, 32, 3, 10, 163252736, 487988736},
      {"resnet18_cifar", 2, 32, 3, 10, 2221690880, 6657994752},
      {"resnet18_cifar", 2, 28, 1, 10, 1823203328, 5467803648},
      {"resnet18", 1, 224, 3, 1000, 3628146688, 10648412160},  // torchvision's 1.81 GMACs
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(std::string(k.arch) + " at " + std::to_string(k.hw));
    const Counts c = count(k.arch, k.batch, k.hw, k.channels, k.classes);
    EXPECT_EQ(c.forward, k.forward);
    EXPECT_EQ(c.training, k.training);
  }
}

// The summary's FLOPs column (Lightning's ModelSummary with an example input): each module's
// forward FLOPs for one sample, its children's included; the fused Linear + ReLU of the mlp
// still gives the Linear its own.
TEST(Throughput, SummaryShowsEachModulesForwardFlops) {
  ModelSpec s;
  s.height = s.width = 32;
  s.channels = 3;
  auto m = make_model("resnet18_cifar", s);
  ModuleFlops flops;
  {
    autograd::NoGradGuard no_grad;
    ModuleFlops::Recording recording(flops);
    m->eval();
    (*m)(Variable(Tensor::zeros({1, 32, 32, 3})));
  }
  (*m)(Variable(Tensor::zeros({1, 32, 32, 3})));  // (not recording now: no change)
  EXPECT_EQ(flops.of(m.get()), 2221690880 / 2);   // FlopCounterMode's, per sample
  int64_t children = 0;
  for (const auto& [name, c] : m->children()) {
    if (name == "conv1") {
      EXPECT_EQ(flops.of(c.get()), 2 * 32 * 32 * 64 * (3 * 3 * 3));
    } else if (name == "fc") {
      EXPECT_EQ(flops.of(c.get()), 2 * 512 * 10);
    }
    children += std::max<int64_t>(flops.of(c.get()), 0);
  }
  EXPECT_EQ(children, flops.of(m.get()));  // every product is in some top-level module
  const std::string summary = model_summary(*m, &flops);
  EXPECT_NE(summary.find("|   FLOPs\n"), std::string::npos) << summary;
  EXPECT_NE(summary.find("| Conv2d            |   1.7 K |   3.5 M\n"), std::string::npos)
      << summary;
  EXPECT_NE(summary.find("1.1 G     Total FLOPs"), std::string::npos) << summary;

  ModelSpec ms;  // 28x28x1 -> 128 -> 256 -> 10
  auto mlp = make_model("mlp", ms);
  ModuleFlops mf;
  {
    ModuleFlops::Recording recording(mf);
    (*mlp)(Variable(Tensor::zeros({1, 28, 28, 1})));
  }
  const auto& layers = mlp->children();
  ASSERT_EQ(layers.size(), 6u);
  EXPECT_EQ(mf.of(layers[1].second.get()), 2 * 784 * 128);  // Linear (+ ReLU, fused)
  EXPECT_EQ(mf.of(layers[2].second.get()), 0);              // that ReLU
  EXPECT_EQ(mf.of(layers[5].second.get()), 2 * 256 * 10);
  EXPECT_EQ(mf.of(mlp.get()), 1085440 / 4);
}

TEST(Throughput, PeakFlopsOfKnownGpus) {
  EXPECT_EQ(peak_dtype("16", "highest"), PeakDtype::kFloat16);
  EXPECT_EQ(peak_dtype("bf16", "high"), PeakDtype::kBFloat16);
  EXPECT_EQ(peak_dtype("32", "highest"), PeakDtype::kFloat32);
  EXPECT_EQ(peak_dtype("32", "high"), PeakDtype::kTf32);
  EXPECT_EQ(peak_dtype("32", "medium"), PeakDtype::kTf32);
  // Names as cudaGetDeviceProperties gives them.
  const struct {
    const char* name;
    PeakDtype dtype;
    double tflops;
  } cases[] = {
      {"NVIDIA H100 80GB HBM3", PeakDtype::kFloat16, 989.5},
      {"NVIDIA H100 80GB HBM3", PeakDtype::kFloat32, 67},
      {"NVIDIA H100 PCIe", PeakDtype::kBFloat16, 756.5},
      {"NVIDIA H100 NVL", PeakDtype::kTf32, 417.5},
      {"NVIDIA H200", PeakDtype::kTf32, 494.5},
      {"NVIDIA GH200 480GB", PeakDtype::kFloat16, 989.5},
      {"NVIDIA A100-SXM4-80GB", PeakDtype::kBFloat16, 312},
      {"NVIDIA A100 80GB PCIe", PeakDtype::kTf32, 156},
      {"NVIDIA L40S", PeakDtype::kFloat16, 362},
      {"NVIDIA L4", PeakDtype::kFloat16, 121},
      {"NVIDIA A10", PeakDtype::kFloat32, 31.2},
      {"Tesla V100-SXM2-32GB", PeakDtype::kFloat16, 125},
      {"Tesla V100-SXM2-32GB", PeakDtype::kTf32, 15.7},  // no TF32: fp32's
      {"Tesla V100S-PCIE-32GB", PeakDtype::kFloat16, 130},
  };
  for (const auto& k : cases)
    EXPECT_DOUBLE_EQ(peak_flops(k.name, k.dtype), k.tflops * 1e12) << k.name;
  EXPECT_EQ(peak_flops("Tesla V100-PCIE-16GB", PeakDtype::kBFloat16), 0);  // no bf16 there
  for (const char* unknown : {"NVIDIA L40", "NVIDIA A10G", "NVIDIA GeForce RTX 4090", "cpu", ""})
    EXPECT_EQ(peak_flops(unknown, PeakDtype::kFloat16), 0) << unknown;
}

TEST_F(TrainerTest, LogsTheTrainingFlopsPerSecondEachEpoch) {
  Config c = base();  // 2 epochs of the mlp (28x28x1 -> 128 -> 256 -> 10)
  const FitResult r = Trainer(c).fit();
  EXPECT_DOUBLE_EQ(r.flops_per_sample, 2453504.0 / 4);  // the count above, per sample
  const std::vector<std::string> rows = metrics_rows(r.version_dir);
  ASSERT_GE(rows.size(), 3u);
  for (size_t row = 1; row <= 2; ++row) {
    const double ips = std::stod(cell(rows, row, "images_per_sec"));
    EXPECT_NEAR(std::stod(cell(rows, row, "tflops_per_device")), r.flops_per_sample * ips * 1e-12,
                1e-8 * r.flops_per_sample * ips * 1e-12)
        << rows[row];
    EXPECT_EQ(cell(rows, row, "mfu"), "") << "no peak known for a CPU";
  }
  EXPECT_NEAR(r.tflops_per_device, std::stod(cell(rows, 2, "tflops_per_device")),
              1e-8 * r.tflops_per_device);
  EXPECT_EQ(scalar_values(r.version_dir, "throughput/tflops_per_device").size(), 2u);
  EXPECT_TRUE(scalar_values(r.version_dir, "throughput/mfu").empty());

  // --peak-tflops gives the CPU a peak: MFU is the rate over it.
  Config peak = base();
  peak.epochs = 1;
  peak.peak_tflops = 0.5;
  peak.experiment_name = "peak";
  const FitResult p = Trainer(peak).fit();
  const std::vector<std::string> prow = metrics_rows(p.version_dir);
  ASSERT_GE(prow.size(), 2u);
  const double tflops = std::stod(cell(prow, 1, "tflops_per_device"));
  EXPECT_NEAR(std::stod(cell(prow, 1, "mfu")), tflops / 0.5, 1e-8 * tflops) << prow[1];
  EXPECT_NEAR(p.mfu, tflops / 0.5, 1e-8 * tflops);
  EXPECT_EQ(scalar_values(p.version_dir, "throughput/mfu").size(), 1u);
}

}  // namespace
}  // namespace mlai::nn
