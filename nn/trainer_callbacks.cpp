// Validation and Lightning's callbacks after it (see trainer.h): evaluate(), a validation within
// the epoch (--val-check-interval), ModelCheckpoint's best.h5 and top-k files, EarlyStopping
// (with --min-epochs/--min-steps), and BackboneFinetuning's unfreezing at an epoch's start.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "io/loader.h"
#include "io/tensorboard.h"
#include "nn/amp.h"
#include "nn/finetune.h"
#include "nn/trainer.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::nn {

namespace t = mlai::tensor;

// --val-check-interval: validation within the epoch, on the global metrics (every rank
// evaluates its shard), logged to TensorBoard at the step, best.h5 when it improves.
// Evaluation uses no generator and changes no state, so training goes on exactly as without.
bool Trainer::validate_within_epoch(int64_t epoch, int64_t b, int64_t val_limit, EvalResult& v) {
  {
    Profiler::Scope s(profiler_, "validation");
    v = evaluate(data_.val, val_limit);
  }
  if (v.samples == 0) return false;
  const double acc = v.confusion.accuracy();
  if (main_) {
    std::printf("validation at epoch %lld, batch %lld (step %lld): loss %.4f    accuracy %.4f\n",
                static_cast<long long>(epoch + 1), static_cast<long long>(b + 1),
                static_cast<long long>(state_.global_step), v.loss, acc);
    std::fflush(stdout);
  }
  if (tb_) {
    tb_->add_scalar("val/loss", static_cast<float>(v.loss), state_.global_step);
    tb_->add_scalar("val/accuracy", static_cast<float>(acc), state_.global_step);
    if (v.top5 >= 0)
      tb_->add_scalar("val/top5_accuracy", static_cast<float>(v.top5), state_.global_step);
    log_per_class(v.confusion, "val");
    tb_->flush();
  }
  state_.epoch = epoch;  // in progress: best.h5 resumes at next_batch like last.h5
  keep_if_best(cfg_.checkpoint_monitor == "val_loss" ? v.loss : acc, epoch);
  // Lightning checks EarlyStopping after every validation, within epochs too.
  return cfg_.early_stopping() && !dev_run_ && early_stopping_update(v);
}

void Trainer::keep_if_best(double score, int64_t epoch) {
  namespace fs = std::filesystem;
  const int64_t k = cfg_.save_top_k;
  if (k == 0 || std::isnan(score)) return;
  finish_checkpoint_write();  // (--async-checkpoint: the top k below are all in place)
  const bool lower = cfg_.checkpoint_monitor == "val_loss";
  auto better = [lower](double a, double b) { return lower ? a < b : a > b; };
  const bool best = std::isnan(state_.best_score) || better(score, state_.best_score);
  if (best) state_.best_score = score;
  std::string kept;  // this validation's top-k file
  if (k != 1) {
    auto& top = state_.top_k;
    auto worst = std::min_element(top.begin(), top.end(), [&](const auto& a, const auto& b) {
      return better(b.first, a.first);
    });
    const bool room = k < 0 || static_cast<int64_t>(top.size()) < k;
    if (room || better(score, worst->first)) {
      if (!room) {
        if (main_ && !dev_run_) fs::remove_all(dir_ + "/checkpoints/" + worst->second);
        top.erase(worst);
      }
      char name[160];
      std::snprintf(name, sizeof(name), "epoch=%lld-step=%lld-%s=%.4f.h5",
                    static_cast<long long>(epoch + 1), static_cast<long long>(state_.global_step),
                    cfg_.checkpoint_monitor.c_str(), score);
      kept = name;
      top.emplace_back(score, kept);
      save(kept);
    }
  }
  if (!best) return;
  if (kept.empty() || dev_run_) {
    save("best.h5");
    return;
  }
  if (!main_) return;  // (one save() a rank: under ZeRO each is a collective)
  // best.h5 is the same file (or a sharded checkpoint's files): hard links (copies where the
  // file system has none), put in place as every checkpoint is.
  const std::string dir = dir_ + "/checkpoints/";
  after_checkpoint_write([dir, kept] { link_checkpoint(dir + kept, dir + "best.h5"); });
}

bool Trainer::early_stop_due(bool requested, int64_t epochs_done) {
  const bool was_pending = state_.early_stopping_pending;
  if (requested) state_.early_stopping_pending = true;
  if (!state_.early_stopping_pending) return false;
  const bool met = epochs_done >= cfg_.min_epochs && state_.global_step >= cfg_.min_steps;
  if (early_stop_reason_.empty()) early_stop_reason_ = "asked for before the resume";
  if (!met && !was_pending && main_) {  // (once, as Lightning says it once)
    std::string until;
    if (cfg_.min_epochs > 0) {
      until += " --min-epochs ";
      until += std::to_string(cfg_.min_epochs);
    }
    if (cfg_.min_steps > 0) {
      until += until.empty() ? " --min-steps " : " and --min-steps ";
      until += std::to_string(cfg_.min_steps);
    }
    std::printf("early stopping put off after %lld epoch(s), step %lld (%s): training goes on "
                "to%s\n",
                static_cast<long long>(epochs_done), static_cast<long long>(state_.global_step),
                early_stop_reason_.c_str(), until.c_str());
  }
  return met;
}

bool Trainer::early_stopping_update(const EvalResult& val) {
  const bool lower = cfg_.early_stopping_monitor == "val_loss";
  const char* name = cfg_.early_stopping_monitor.c_str();
  const double v = lower ? val.loss : val.confusion.accuracy();
  const auto better = [&](double a, double b) { return lower ? a < b : a > b; };
  double& best = state_.early_stopping_best;
  char why[256];
  // In Lightning's order: check_finite, stopping_threshold, divergence_threshold, patience.
  const std::string& stop_at = cfg_.early_stopping_stopping_threshold;
  const std::string& diverge_at = cfg_.early_stopping_divergence_threshold;
  if (!std::isfinite(v)) {
    if (std::isnan(best))
      std::snprintf(why, sizeof(why), "%s = %g is not finite (no finite value before)", name, v);
    else
      std::snprintf(why, sizeof(why), "%s = %g is not finite (best %.4f)", name, v, best);
  } else if (!stop_at.empty() && better(v, std::stod(stop_at))) {
    std::snprintf(why, sizeof(why), "%s = %.4f is better than --early-stopping-stopping-threshold %s",
                  name, v, stop_at.c_str());
  } else if (!diverge_at.empty() && better(std::stod(diverge_at), v)) {
    std::snprintf(why, sizeof(why),
                  "%s = %.4f is worse than --early-stopping-divergence-threshold %s", name, v,
                  diverge_at.c_str());
  } else if (const double d = cfg_.early_stopping_min_delta;
             std::isnan(best) || better(lower ? v + d : v - d, best)) {
    best = v;
    state_.early_stopping_wait = 0;
    return false;
  } else if (++state_.early_stopping_wait >= cfg_.early_stopping_patience &&
             cfg_.early_stopping_patience > 0) {
    std::snprintf(why, sizeof(why),
                  "%s has not improved by more than %g for %lld validation(s) (best %.4f)", name,
                  cfg_.early_stopping_min_delta,
                  static_cast<long long>(state_.early_stopping_wait), best);
  } else {
    return false;
  }
  early_stop_reason_ = why;
  return true;
}

EvalResult Trainer::evaluate(const io::Dataset& ds, int64_t max_batches) {
  EvalResult r;
  r.confusion = io::ConfusionMatrix(ds.num_classes, ds.class_names);
  if (ds.count == 0 || max_batches == 0) return r;
  // Validation runs the weight average (Lightning swaps it in for the validation loop).
  const bool averaged = ema_ && &ds == &data_.val;
  if (averaged) swap_average(*ema_);
  autograd::NoGradGuard no_grad;
  model_->eval();
  io::LoaderOptions lo;
  lo.batch_size = cfg_.batch_size;
  lo.shuffle = false;
  lo.workers = cfg_.workers;
  lo.limit_batches = max_batches;
  lo.device = device_;
  lo.dtype = compute_dtype(precision_);
  lo.rank = group_.rank();
  lo.world = group_.world();
  lo.pad = false;  // every sample counted once across ranks: exact global metrics
  io::Loader loader(ds, lo);
  loader.start_epoch(0);
  Tensor loss_sum = Tensor::zeros({}, DType::kFloat32, device_);
  Tensor counts = Tensor::zeros({ds.num_classes, ds.num_classes}, DType::kInt64, device_);
  // Top-5 accuracy (torchmetrics' top_k=5), where more than 5 classes make it mean something.
  const bool top5 = ds.num_classes > 5;
  Tensor top5_hits = Tensor::zeros({}, DType::kInt64, device_);
  // ZeRO stage 3: evaluation gathers unit by unit as training does (FSDP's forward), the root
  // kept for the whole pass, so it never holds the whole model either. These shards are not
  // padded (exact global metrics), so a rank with fewer batches than another runs as many
  // forwards on a blank image more: every rank takes part in the same gathers.
  int64_t gathers_left = 0;
  if (zero_ && zero_->parameters_sharded())
    gathers_left = static_cast<int64_t>(
        dist::allreduce_host(group_, static_cast<double>(loader.num_batches()), true));
  while (auto b = loader.next()) {
    --gathers_left;
    Variable logits = (*model_)(Variable(b->images));
    Variable loss = autograd::cross_entropy(logits, b->labels, cfg_.label_smoothing, weights());
    t::axpy_(static_cast<double>(b->labels.numel()), loss.data(), loss_sum);
    t::confusion_update_(t::max_dim(logits.data(), 1).second, b->labels, counts);
    if (top5) t::topk_hits_(logits.data(), b->labels, 5, top5_hits);
    r.samples += b->labels.numel();
  }
  for (; gathers_left > 0; --gathers_left)
    (*model_)(Variable(Tensor::zeros({1, ds.height, ds.width, ds.channels}, lo.dtype, device_)));
  model_->train();
  if (zero_) zero_->release_units();
  if (averaged) swap_average(*ema_);
  Tensor n = Tensor::full({}, static_cast<double>(r.samples), DType::kFloat32, device_);
  allreduce(loss_sum);
  allreduce(counts);
  allreduce(n);
  if (top5) allreduce(top5_hits);
  r.samples = static_cast<int64_t>(n.item());
  r.loss = loss_sum.item() / static_cast<double>(std::max<int64_t>(r.samples, 1));
  if (top5)
    r.top5 = static_cast<double>(top5_hits.item()) / static_cast<double>(std::max<int64_t>(r.samples, 1));
  r.confusion = to_matrix(counts, ds);
  return r;
}

void Trainer::finetune_epoch_start(int64_t epoch, double lr) {
  const int64_t at = cfg_.unfreeze_backbone_at_epoch;
  if (at < 0 || epoch < at) return;
  double backbone;
  if (!frozen_.empty()) {
    // BackboneFinetuning.unfreeze_and_add_param_group: the frozen parameters train again in a
    // new group (fresh optimizer state, its own step count) at a share of the head's rate.
    // (A run resumed past `at` with the flag newly given unfreezes the same way at the next
    // epoch start.)
    backbone = backbone_lr(at, at, 0.0, lr, cfg_.backbone_lr_ratio, cfg_.backbone_lr_growth);
    make_trainable(*model_, frozen_);
    opt_->set_step_count(state_.global_step - scaler_->skipped_steps());  // the exact count
    opt_->add_group(frozen_, backbone);
    frozen_.clear();
    // PyTorch DDP never allreduces parameters that required no gradients when it was made;
    // here the reducer is made again over the parameters that train now.
    if (comm_) build_reducer();
    if (main_)
      std::printf("epoch %lld: %s unfrozen (%lld trainable parameters), its learning rate "
                  "%g (%g x the head's %g)\n",
                  static_cast<long long>(epoch + 1),
                  cfg_.freeze.empty() ? "backbone" : cfg_.freeze.c_str(),
                  static_cast<long long>(trainable_parameter_count(*model_)), backbone,
                  cfg_.backbone_lr_ratio, lr);
  } else {
    if (epoch == at || opt_->group_count() < 2) return;  // (set when unfrozen)
    backbone = backbone_lr(epoch, at, opt_->group_lr(1), lr, cfg_.backbone_lr_ratio,
                           cfg_.backbone_lr_growth);
    opt_->set_group_lr(1, backbone);
  }
}

}  // namespace mlai::nn
