// ResNet-18 (small-image variant) trains on the real Fashion-MNIST on the CPU: over 100 steps the
// training loss falls and the accuracy on 256 test images rises from chance, and two batches can
// be overfitted. Skipped when
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
  // Accuracy on the first 256 test images in eval mode: the same images before and after, so
  // the rise is not sampling noise (the training batches' own accuracy over 20 steps of 16
  // images varies by +-0.03).
  io::LoaderOptions eval_lo;
  eval_lo.batch_size = 64;
  eval_lo.shuffle = false;
  eval_lo.limit_batches = 4;
  eval_lo.workers = 0;
  auto test_accuracy = [&] {
    m->eval();
    autograd::NoGradGuard no_grad;
    io::Loader test(d.test, eval_lo);
    test.start_epoch(0);
    double hits = 0, count = 0;
    while (auto b = test.next()) {
      const auto pred =
          tensor::max_dim((*m)(autograd::Variable(b->images)).data(), 1).second.to_vector<int64_t>();
      const auto lab = b->labels.to_vector<int64_t>();
      for (size_t i = 0; i < pred.size(); ++i) hits += pred[i] == lab[i];
      count += static_cast<double>(pred.size());
    }
    m->train();
    return hits / count;
  };
  const double acc_before = test_accuracy();
  loader.start_epoch(0);
  std::vector<double> losses;
  while (auto b = loader.next()) {
    autograd::Variable logits = (*m)(autograd::Variable(b->images));
    autograd::Variable loss = autograd::cross_entropy(logits, b->labels);
    losses.push_back(loss.data().item());
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
  EXPECT_LT(loss_last, 0.6 * loss_first) << "first 20 steps " << loss_first << ", last 20 " << loss_last;
  const double acc_after = test_accuracy();
  std::printf("test accuracy on 256 images: %.3f before, %.3f after 100 steps\n", acc_before,
              acc_after);
  EXPECT_LT(acc_before, 0.3);  // (ten classes)
  EXPECT_GT(acc_after, 0.65);
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
