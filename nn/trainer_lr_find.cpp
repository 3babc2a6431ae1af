// --lr-find: Lightning's learning-rate range test (Tuner.lr_find). From 1e-8 the learning
// rate grows exponentially to 1 over 100 optimizer steps on training batches; the loss is
// smoothed (beta 0.98, bias-corrected), the test stops early once the smoothed loss exceeds 4x
// its best, and the suggestion is the rate where the smoothed loss falls fastest (the least
// central-difference gradient, skipping the first 10 points and the last), all as Lightning
// computes it (too few points left: no suggestion, --lr stays). Each step accumulates the
// gradients of --accumulate-grad-batches batches, as training does. The model, optimizer,
// loss scaler and dropout generators are restored after, so training then starts exactly as
// it would have with --lr set to the suggestion.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <vector>

#include "autograd/ops.h"
#include "dist/communicator.h"
#include "nn/trainer.h"
#include "tensor/ops.h"

namespace mlai::nn {

Trainer::Snapshot Trainer::snapshot() {
  Snapshot s;
  for (auto& [n, t] : model_->named_tensors())
    if (!t->released()) s.tensors.emplace_back(t, t->clone());  // (ZeRO: the masters it holds)
  for (auto& [n, t] : opt_->state())
    if (t->defined()) s.tensors.emplace_back(t, t->clone());  // (ZeRO: this rank's own)
  for (auto& [n, t] : scaler_->state()) s.tensors.emplace_back(t, t->clone());
  s.opt_steps = opt_->step_count();
  s.lr = opt_->lr();
  for (auto& [n, g] : model_->named_generators())
    s.generators.push_back({g, {g->seed(), g->offset()}});
  return s;
}

void Trainer::restore(const Snapshot& s) {
  for (auto& [dst, copy] : s.tensors) dst->copy_from(copy);
  model_->refresh_working_parameters();
  // Sharded masters: each owner refreshed its working copies, which the others take.
  if (zero_) zero_->broadcast_parameters();
  opt_->set_step_count(s.opt_steps);
  opt_->set_lr(s.lr);
  for (auto& [g, st] : s.generators) g->set_state(st.first, st.second);
}

int64_t steepest_descent(const std::vector<double>& losses, int64_t skip_begin,
                         int64_t skip_end) {
  std::vector<int64_t> kept;
  for (int64_t i = skip_begin; i < static_cast<int64_t>(losses.size()) - skip_end; ++i)
    if (std::isfinite(losses[static_cast<size_t>(i)])) kept.push_back(i);
  const auto n = static_cast<int64_t>(kept.size());
  if (n < 2) return -1;
  auto at = [&](int64_t j) { return losses[static_cast<size_t>(kept[static_cast<size_t>(j)])]; };
  int64_t best = 0;
  double best_grad = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    const double g = j == 0       ? at(1) - at(0)
                     : j == n - 1 ? at(n - 1) - at(n - 2)
                                  : (at(j + 1) - at(j - 1)) / 2;
    if (g < best_grad) {
      best_grad = g;
      best = j;
    }
  }
  return kept[static_cast<size_t>(best)];
}

double Trainer::lr_find(const io::LoaderOptions& base, nlohmann::json& record) {
  constexpr double kMinLr = 1e-8, kMaxLr = 1.0, kBeta = 0.98, kDiverged = 4.0;
  constexpr int64_t kSteps = 100, kSkipBegin = 10, kSkipEnd = 1;
  namespace t = mlai::tensor;
  const Snapshot before = snapshot();  // what the test changes, to put back after it
  const double lr_before = before.lr;

  io::LoaderOptions lo = base;
  lo.limit_batches = -1;
  io::Loader loader(data_.train, lo);
  int64_t pass = 0;
  loader.start_epoch(pass);
  std::vector<double> lrs, losses, smoothed;
  double avg = 0, best = std::numeric_limits<double>::infinity();
  // As in training, an optimizer step sums the gradients of --accumulate-grad-batches batches
  // (each loss divided by their number; only the last allreduces), and the loss recorded for
  // the step is their mean, as Lightning's finder records the accumulated running loss.
  const int64_t accum = accumulation_at(cfg_, state_.epoch);  // (the epoch training starts in)
  if (reducer_) reducer_->prepare_backward(true);
  for (int64_t i = 0; i < kSteps; ++i) {
    const double lr = kMinLr * std::pow(kMaxLr / kMinLr, static_cast<double>(i) / kSteps);
    opt_->set_lr(lr);
    double loss = 0;
    for (int64_t a = 0; a < accum; ++a) {
      std::optional<io::Batch> b = loader.next();
      if (!b) {  // fewer batches than steps: go round again
        loader.start_epoch(++pass);
        b = loader.next();
      }
      if (reducer_ && accum > 1) reducer_->prepare_backward(a + 1 == accum);
      // Mixed as training mixes (its own draws: an epoch index training never uses).
      const Mixed m = mix(*b, -1 - pass, i * accum + a);
      autograd::Variable out = (*model_)(autograd::Variable(m.images));
      autograd::Variable l = training_loss(out, b->labels, m);
      const double part = 1.0 / static_cast<double>(accum);
      if (scaler_->enabled())
        l.backward(accum > 1 ? t::scale(scaler_->seed(), part) : scaler_->seed());
      else if (accum > 1)
        l.backward(Tensor::full({}, part, DType::kFloat32, device_));
      else
        l.backward();
      if (zero_) zero_->release_units();  // (stage 3: what backward left gathered)
      if (reducer_ && reducer_->shards_gradients() && a + 1 < accum) reducer_->finish();
      // The global mean loss of this step (a host read per batch: 100 steps, once).
      loss += l.data().item() * part;
    }
    if (reducer_) reducer_->finish();
    // (Counted on from the run's steps: a resumed run's optimizer, and any parameter group it
    // added later, go on from their own step counts, as training would.)
    take_step(1.0f / static_cast<float>(group_.world()), state_.global_step + i);
    if (reducer_)
      reducer_->zero_grad();
    else
      opt_->zero_grad();
    if (group_.world() > 1) loss = dist::allreduce_host(group_, loss) / group_.world();
    avg = kBeta * avg + (1 - kBeta) * loss;
    const double s = avg / (1 - std::pow(kBeta, static_cast<double>(i + 1)));
    lrs.push_back(lr);
    losses.push_back(loss);
    smoothed.push_back(s);
    // Lightning's counts from its first step (global_step 1 after it): diverged (or NaN)
    // from the second step on, the rest is noise.
    if (i > 0 && !(s <= kDiverged * best)) break;
    if (s < best) best = s;
  }

  restore(before);

  const int64_t idx = steepest_descent(smoothed, kSkipBegin, kSkipEnd);
  // Too few points (the loss diverged at once): like Lightning, no suggestion; --lr stays.
  const double suggestion = idx < 0 ? 0.0 : lrs[static_cast<size_t>(idx)];
  record = {{"suggested_lr", idx < 0 ? nlohmann::json() : nlohmann::json(suggestion)},
            {"steps", static_cast<int64_t>(smoothed.size())},
            {"min_lr", kMinLr},
            {"max_lr", kMaxLr}};
  if (main_ && !dev_run_) {
    std::ofstream csv(dir_ + "/lr_find.csv");
    csv << "step,lr,loss,smoothed_loss\n";
    csv.precision(9);
    for (size_t i = 0; i < lrs.size(); ++i)
      csv << i << "," << lrs[i] << "," << losses[i] << "," << smoothed[i] << "\n";
    if (!csv) throw std::runtime_error("cannot write " + dir_ + "/lr_find.csv");
  }
  if (main_ && idx < 0) {
    std::printf("lr_find: the loss diverged after %zu steps, too few for a suggestion; --lr "
                "stays %g%s\n",
                smoothed.size(), lr_before,
                dev_run_ ? "" : ("; the curve is in " + dir_ + "/lr_find.csv").c_str());
    std::fflush(stdout);
  } else if (main_) {
    std::printf(
        "lr_find: %zu steps from %g to %g%s; the smoothed loss falls fastest at lr %.3g "
        "(step %lld)%s\n",
        smoothed.size(), kMinLr, lrs.back(),
        static_cast<int64_t>(smoothed.size()) < kSteps ? " (stopped: the loss diverged)" : "",
        suggestion, static_cast<long long>(idx),
        dev_run_ ? "" : ("; the curve is in " + dir_ + "/lr_find.csv").c_str());
    std::fflush(stdout);
  }
  return suggestion;
}

}  // namespace mlai::nn
