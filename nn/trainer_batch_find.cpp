// --scale-batch-size power|binsearch: Lightning's Tuner.scale_batch_size (its BatchSizeFinder),
// with its defaults: trials of 3 training steps each (forward, backward, optimizer step, on
// training batches, MixUp/CutMix and the loss scaler as in training), starting at batch size 2.
// power doubles the size after each trial that fits and stops at the first that runs out of
// memory; binsearch then bisects between the last size that fit and the first that did not.
// At most 25 trials, and never more than the training split. The result is the largest size
// that fit (Lightning's power mode can return an untried doubling). A trial that runs out of
// memory is caught, the allocator's cache given back, and the search goes on; any other error
// ends the run. The model, optimizer, loss scaler and dropout generators are restored after, so
// training then starts exactly as it would have with --batch-size set to the result.
// MLAI_FAULT_OOM_ABOVE=N (tests) makes a trial of more than N samples fail as out of memory.
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

#include "autograd/ops.h"
#include "nn/trainer.h"
#include "tensor/allocator.h"

namespace mlai::nn {

namespace {

// An allocation failure: the caching allocator's, a library's workspace, or the host's.
bool out_of_memory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  const std::string m = e.what();
  return m.find("out of memory") != std::string::npos ||
         m.find("ALLOC_FAILED") != std::string::npos;
}

}  // namespace

int64_t Trainer::scale_batch_size(const io::LoaderOptions& base, nlohmann::json& record) {
  constexpr int64_t kStepsPerTrial = 3, kInit = 2, kMaxTrials = 25;
  const bool bisect = cfg_.scale_batch_size == "binsearch";
  const int64_t samples = data_.train.count;
  const char* fault = std::getenv("MLAI_FAULT_OOM_ABOVE");
  const int64_t fault_above = fault != nullptr ? std::atoll(fault) : 0;
  const Snapshot before = snapshot();
  const double clip = cfg_.gradient_clip_algorithm == "norm" ? cfg_.gradient_clip_val : 0.0;

  // One trial: true when kStepsPerTrial steps of this batch size ran.
  auto fits = [&](int64_t batch) {
    try {
      io::LoaderOptions lo = base;
      lo.batch_size = batch;
      lo.limit_batches = kStepsPerTrial;
      io::Loader loader(data_.train, lo);
      loader.start_epoch(0);
      for (int64_t i = 0; i < kStepsPerTrial; ++i) {
        std::optional<io::Batch> b = loader.next();
        if (!b) break;
        if (fault_above > 0 && b->labels.numel() > fault_above)
          throw std::runtime_error("out of memory (MLAI_FAULT_OOM_ABOVE=" + std::to_string(fault_above) + ")");
        const Mixed m = mix(*b, -2, i);  // (an epoch index training never uses)
        autograd::Variable out = (*model_)(autograd::Variable(m.images));
        autograd::Variable l = training_loss(out, b->labels, m);
        if (scaler_->enabled())
          l.backward(scaler_->seed());
        else
          l.backward();
        scaled_step(*opt_, *scaler_, 1.0f, state_.global_step + i, clip);
        opt_->zero_grad();
        (void)l.data().item();  // waits for the step: its errors surface here
      }
      return true;
    } catch (const std::exception& e) {
      if (!out_of_memory(e)) throw;
      opt_->zero_grad();
      if (device_.is_cuda()) tensor::cuda_allocator(device_.index).empty_cache();
      return false;
    }
  };

  int64_t batch = std::min(kInit, samples), good = 0, bad = 0, trials = 0;
  nlohmann::json tried = nlohmann::json::array();
  while (trials < kMaxTrials) {
    ++trials;
    const bool ok = fits(batch);
    tried.push_back({{"batch_size", batch}, {"fits", ok}});
    if (main_) {
      std::printf("scale_batch_size: batch size %lld %s\n", static_cast<long long>(batch),
                  ok ? "fits" : "ran out of memory");
      std::fflush(stdout);
    }
    if (ok) {
      good = batch;
      if (batch >= samples) break;  // the whole training split in one batch
    } else {
      bad = batch;
      if (good == 0) {  // nothing fit yet: halve, as Lightning does
        if (batch == 1) break;
        batch /= 2;
        continue;
      }
      if (!bisect) break;
    }
    if (bad == 0) {
      batch = std::min(batch * 2, samples);
    } else {
      if (bad - good <= 1) break;
      batch = good + (bad - good) / 2;
    }
  }
  restore(before);
  if (good == 0)
    throw std::runtime_error("--scale-batch-size: even a batch of 1 runs out of memory on " +
                             device_.str());
  record = {{"mode", cfg_.scale_batch_size},
            {"batch_size", good},
            {"steps_per_trial", kStepsPerTrial},
            {"trials", tried}};
  if (main_) {
    std::printf("scale_batch_size (%s): %lld trials; training with batch size %lld%s\n",
                cfg_.scale_batch_size.c_str(), static_cast<long long>(trials),
                static_cast<long long>(good),
                good >= samples ? " (the whole training split)" : "");
    std::fflush(stdout);
  }
  return good;
}

}  // namespace mlai::nn
