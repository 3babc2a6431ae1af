// Weight averages in the trainer (see trainer.h): --ema-decay's and --swa-lrs's average
// swapped with or copied into the model on every rank (under ZeRO each owner its own share),
// and SWA's end (the model takes the average, batch norm is recomputed, it is validated and
// saved).
#include <chrono>
#include <cstdio>
#include <vector>

#include "nn/conv_layers.h"
#include "nn/experiment.h"
#include "nn/trainer.h"

namespace mlai::nn {

void Trainer::swap_average(WeightAverage& avg) {
  if (zero_) zero_->release_units();  // (zero3: a unit held would keep the values swapped out)
  avg.swap(*model_);
  if (zero_) zero_->broadcast_parameters();
}

void Trainer::copy_average(WeightAverage& avg) {
  if (zero_) zero_->release_units();
  avg.copy_to(*model_);
  if (zero_) zero_->broadcast_parameters();
}

void Trainer::finish_swa(io::Loader& loader, int64_t epoch, int64_t val_limit, FitResult& res) {
  copy_average(*swa_);
  const std::vector<BatchNorm2d*> bns = batch_norms(*model_);
  int64_t batches = 0;
  if (!bns.empty()) {  // torch.optim.swa_utils.update_bn: one pass, statistics as a plain mean
    Profiler::Scope s(profiler_, "swa batch norm");
    for (BatchNorm2d* bn : bns) {
      bn->reset_running_stats();
      bn->set_cumulative(true);
    }
    autograd::NoGradGuard no_grad;
    model_->train();
    loader.start_epoch(epoch, 0);
    ProgressLine progress(cfg_.progress && main_, "swa batch norm", loader.num_batches());
    const auto t0 = std::chrono::steady_clock::now();
    int64_t images = 0;
    while (auto b = loader.next()) {
      (*model_)(Variable(b->images));
      images += b->labels.numel();
      const double el = seconds_since(t0);
      progress.update(++batches, nullptr, el > 0 ? images / el : 0);  // (no loss to show)
    }
    progress.finish();
    for (BatchNorm2d* bn : bns) bn->set_cumulative(false);
  }
  state_.swa_done = true;
  EvalResult val;
  if (data_.val.count > 0) {
    Profiler::Scope s(profiler_, "validation");
    val = evaluate(data_.val, val_limit);
  }
  if (main_) {
    std::printf("SWA: the model takes the average of %lld epochs' weights",
                static_cast<long long>(swa_->updates()));
    if (!bns.empty())
      std::printf("; batch-norm statistics recomputed over %lld training batches",
                  static_cast<long long>(batches));
    if (val.samples > 0)
      std::printf("    validation loss: %.4f    validation accuracy: %.4f", val.loss,
                  val.confusion.accuracy());
    std::printf("\n");
    std::fflush(stdout);
  }
  if (val.samples > 0) {
    res.val = val;
    if (tb_) {
      tb_->add_scalar("val/swa_loss", static_cast<float>(val.loss), state_.global_step);
      tb_->add_scalar("val/swa_accuracy", static_cast<float>(val.confusion.accuracy()),
                      state_.global_step);
      tb_->flush();
    }
    // ModelCheckpoint sees this validation too (Lightning's extra SWA epoch validates).
    keep_if_best(cfg_.checkpoint_monitor == "val_loss" ? val.loss : val.confusion.accuracy(),
                 epoch - 1);
  }
  save("last.h5");  // the averaged model: a resume goes straight to the test
}

}  // namespace mlai::nn
