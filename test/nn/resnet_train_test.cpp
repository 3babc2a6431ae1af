// ResNet-18 (small-image variant) trains on the real Fashion-MNIST on the CPU: the loss falls
// and the accuracy rises over the first steps, and two batches can be overfitted. Skipped when
// the data set is not installed (apt-get install dataset-fashion-mnist). These are the slowest
// tests in the suite (about a minute on 2 cores).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "io/loader.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "nn/trainer.h"
#include "tensor/ops.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;
const char* kData = "/usr/share/datasets/fashion-mnist";

TEST(ResNetTraining, LossFallsAndAccuracyRises) {
  if (!fs::exists(std::string(kData) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << kData;
  const io::DataSplits d = io::load_dataset("fashion-mnist", "", 0.0, 1);
  ModelSpec s;
  s.channels = 1;
  s.seed = 1;
  auto m = make_model("resnet18_cifar", s);
  OptimizerConfig oc;
  oc.name = "adam";
  oc.lr = 1e-3;
  auto opt = make_optimizer(m->named_parameters(), oc);
  io::LoaderOptions lo;
  lo.batch_size = 16;
  lo.limit_batches = 100;
  lo.workers = 1;
  io::Loader loader(d.train, lo);
  loader.start_epoch(0);
  std::vector<double> losses, accs;
  while (auto b = loader.next()) {
    autograd::Variable logits = (*m)(autograd::Variable(b->images));
    autograd::Variable loss = autograd::cross_entropy(logits, b->labels);
    const auto pred = tensor::max_dim(logits.data(), 1).second.to_vector<int64_t>();
    const auto lab = b->labels.to_vector<int64_t>();
    double hits = 0;
    for (size_t i = 0; i < pred.size(); ++i) hits += pred[i] == lab[i];
    losses.push_back(loss.data().item());
    accs.push_back(hits / static_cast<double>(pred.size()));
    loss.backward();
    opt->step();
    opt->zero_grad();
  }
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += v[i];
    return s / static_cast<double>(to - from);
  };
  ASSERT_EQ(losses.size(), 100u);
  const double loss_first = mean(losses, 0, 20), loss_last = mean(losses, 80, 100);
  const double acc_first = mean(accs, 0, 20), acc_last = mean(accs, 80, 100);
  EXPECT_LT(loss_last, 0.6 * loss_first) << "first 20 steps " << loss_first << ", last 20 " << loss_last;
  EXPECT_GT(acc_last, acc_first + 0.25) << "first 20 steps " << acc_first << ", last 20 " << acc_last;
}

TEST(ResNetTraining, OverfitsTwoBatches) {
  if (!fs::exists(std::string(kData) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << kData;
  Config c;
  c.arch = "resnet18_cifar";
  c.overfit_batches = 2;
  c.batch_size = 8;
  c.epochs = 15;
  c.lr_schedule = "constant";
  c.device = "cpu";
  c.workers = 0;
  c.progress = false;
  c.checkpoint_every = 0;
  // No validation and no pass over the 10,000 test images on a CPU ResNet. (Assigned through
  // a helper: GCC 12 -O3 gives a false -Wrestrict for a short literal assigned here.)
  const std::string none(1, '0');
  c.limit_val_batches = none;
  c.limit_test_batches = none;
  std::string dir = "mlai_resnet_overfit_";
  dir += std::to_string(getpid());
  c.log_dir = (fs::temp_directory_path() / dir).string();
  Trainer t(c);
  const FitResult r = t.fit();
  EXPECT_LT(r.last_train_loss, 0.05);
  fs::remove_all(c.log_dir);
}

}  // namespace
}  // namespace mlai::nn
