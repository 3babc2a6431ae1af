// The training loop (see trainer.h; the constructor is in trainer_setup.cpp). Per-step
// statistics stay on the device (a loss sum and a confusion matrix) and reach the host once per
// epoch or per progress-line refresh.
#include "nn/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <thread>
#include <tuple>
#include <utility>

#include "dist/communicator.h"
#include "io/loader.h"
#include "io/tensorboard.h"
#include "nn/amp.h"
#include "nn/finetune.h"
#include "nn/lr_schedule.h"
#include "nn/step_log.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"
#include "tensor/trace.h"

namespace mlai::nn {

namespace t = mlai::tensor;
using Clock = std::chrono::steady_clock;

namespace {
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (sig == SIGINT && g_stop_signal.load() == SIGINT) std::_Exit(130);  // second Ctrl-C
  g_stop_signal.store(sig);
}


}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) sigaction(s, &sa, nullptr);
}

void Trainer::take_step(float grad_scale, int64_t global_step, Tensor* grad_sq) {
  // ZeRO stage 2: each rank holds its own gradients only, so the inf check and the norm are
  // summed over the ranks.
  std::function<void(Tensor&)> sum_over_ranks;
  // (Under hybrid sharding every group holds the same sums: its own group's add up to them.)
  if (reducer_ && reducer_->shards_gradients())
    sum_over_ranks = [this](Tensor& t) { shard_comm().allreduce_sum(t); };
  scaled_step(*opt_, *scaler_, grad_scale, global_step,
              cfg_.gradient_clip_algorithm == "norm" ? cfg_.gradient_clip_val : 0.0, grad_sq,
              sum_over_ranks);
  if (zero_) zero_->broadcast_parameters();
}

void Trainer::allreduce(Tensor& t) {
  if (comm_) comm_->allreduce_sum(t);
}

int Trainer::stop_requested(bool time_up) {
  // All ranks must stop at the same step, or one would wait forever in the next allreduce:
  // the largest of (signal * 2 + time_up) over ranks decides (a signal before the time).
  const double local = 2.0 * g_stop_signal.load() + (time_up ? 1 : 0);
  const auto code = static_cast<int>(
      group_.world() > 1 ? dist::allreduce_host(group_, local, true) : local);
  return code / 2 > 0 ? code / 2 : -(code % 2);
}

bool Trainer::checkpoint_due() const {
  if (checkpoint_interval_ <= 0) return false;
  const bool due = seconds_since(last_saved_) >= checkpoint_interval_;
  // On rank 0's clock (only rank 0 writes), and every rank says the same: under ZeRO each
  // save() is a collective.
  if (group_.world() == 1) return due;
  return dist::allreduce_host(group_, main_ && due ? 1.0 : 0.0, true) > 0;
}

double Trainer::train_seconds() const {
  return seconds_before_ + std::chrono::duration<double>(Clock::now() - fit_clock_).count();
}

void Trainer::sync_from_rank0(bool training) {
  // Weights loaded anew (--test-ckpt) land in every parameter: ZeRO gathers them for good.
  if (zero_) zero_->unshard();
  if (comm_) {
    std::vector<Tensor*> shared;
    for (auto& [n, t] : model_->named_tensors()) shared.push_back(t);
    if (training) {
      // (Under ZeRO each rank holds its own share of the state, read from the checkpoint.)
      if (opt_->config().owned.empty())
        for (auto& [n, st] : opt_->state()) shared.push_back(st);
      for (auto& [n, st] : scaler_->state()) shared.push_back(st);
    }
    dist::broadcast_tensors(*comm_, shared);
  }
  model_->refresh_working_parameters();
}

Trainer::Mixed Trainer::mix(const io::Batch& b, int64_t epoch, int64_t index) {
  Mixed m;
  m.images = b.images;
  const MixConfig mc{cfg_.mixup_alpha, cfg_.cutmix_alpha};
  if (!mc.enabled()) return m;
  Profiler::Scope s(profiler_, "mixup/cutmix");
  const Tensor& x = b.images;
  const kernels::MixParams p = draw_mix(mc, cfg_.seed, group_.rank(), epoch, index, x.size(0),
                                        x.size(1), x.size(2), x.size(3));
  m.images = t::mix_batch(x, p);
  m.rolled_labels = t::roll_rows(b.labels);
  m.lambda = p.lambda;
  return m;
}

autograd::Variable Trainer::training_loss(const autograd::Variable& logits, const Tensor& labels,
                                          const Mixed& m) const {
  if (!m.rolled_labels.defined())
    return autograd::cross_entropy(logits, labels, cfg_.label_smoothing, weights());
  return mixed_cross_entropy(logits, labels, m.rolled_labels, m.lambda, cfg_.label_smoothing);
}

FitResult Trainer::fit() {
  const auto t_start = Clock::now();
  dev_run_ = cfg_.fast_dev_run > 0;
  const bool dev_run = dev_run_;
  // Lightning's trainer.test(ckpt_path=FILE) and trainer.validate(ckpt_path=FILE): no training.
  if (cfg_.test_only || cfg_.validate_only) {
    const bool test = cfg_.test_only;
    const int64_t images = test ? data_.test.count : data_.val.count;
    if (images == 0)
      throw std::invalid_argument(
          test ? "--test-only: the data set (--dataset " + cfg_.dataset + ") has no test split"
               : std::string("--validate-only: there is no validation split (--val-split 0)"));
    FitResult res;
    open_logs(res);
    if (main_)
      std::printf("model %s on %s: %lld parameters; %s %s on %lld %s images\n",
                  cfg_.arch.c_str(), device_.str().c_str(),
                  static_cast<long long>(model_->parameter_count()),
                  test ? "testing" : "validating", cfg_.test_ckpt.c_str(),
                  static_cast<long long>(images), test ? "test" : "validation");
    write_hparams(nlohmann::json::object());
    if (test)
      test_and_report(res);
    else
      validate_and_report(res);
    report_profile(seconds_since(t_start));
    return res;
  }
  io::LoaderOptions lo = train_loader_options();
  nlohmann::json tuned;  // the tuners' records, for hparams.json
  if (!cfg_.scale_batch_size.empty() && !batch_size_found_) {  // Tuner.scale_batch_size
    Profiler::Scope s(profiler_, "scale_batch_size");
    model_->train();
    nlohmann::json record;
    cfg_.batch_size = scale_batch_size(lo, record);
    lo.batch_size = cfg_.batch_size;
    tuned["scale_batch_size"] = record;
  }
  io::Loader probe(data_.train, lo);
  const int64_t all_batches = probe.num_batches();
  lo.limit_batches =
      dev_run ? std::min(cfg_.fast_dev_run, all_batches)
              : limit_batches(cfg_.limit_train_batches, all_batches, "--limit-train-batches");
  io::Loader loader(data_.train, lo);
  const int64_t steps_per_epoch = loader.num_batches();
  const int64_t val_batches = dev_run ? cfg_.fast_dev_run : -1;
  const int64_t val_limit =
      dev_run ? val_batches
              : limit_batches(cfg_.limit_val_batches,
                              (data_.val.count + cfg_.batch_size - 1) / cfg_.batch_size,
                              "--limit-val-batches");

  // Batches between validations within an epoch (>= steps_per_epoch: only at its end;
  // --fast-dev-run validates at the end only, as Lightning's does).
  const int64_t val_every =
      dev_run ? steps_per_epoch
              : std::max<int64_t>(1, limit_batches(cfg_.val_check_interval, steps_per_epoch,
                                                   "--val-check-interval"));

  // Lightning's max_steps and max_time; --epochs -1: as many epochs as max_steps needs.
  const int64_t max_steps = dev_run ? -1 : cfg_.max_steps;
  const double max_time = dev_run || cfg_.max_time.empty() ? 0.0
                                                           : parse_duration(cfg_.max_time, "--max-time");
  const StepPlan plan = plan_steps(steps_per_epoch, max_steps, dev_run);
  const int64_t epochs = plan.epochs;
  const std::vector<int64_t>& epoch_starts = plan.epoch_starts;
  ScheduleConfig sc = plan.schedule;

  FitResult res;
  open_logs(res);
  // A resumed run writing to another directory (not a requeued Slurm job) starts its best.h5
  // and top-k list afresh there, as Lightning's ModelCheckpoint does when its dirpath changed.
  if (!cfg_.resume.empty()) {
    double moved = main_ && (!std::isnan(state_.best_score) || !state_.top_k.empty()) &&
                           state_.checkpoint_dir != dir_ + "/checkpoints";
    if (group_.world() > 1) moved = dist::allreduce_host(group_, moved, true);
    if (moved > 0) {
      if (main_)
        std::printf("best.h5 and --save-top-k start afresh in %s/checkpoints (the run's were in %s)\n",
                    dir_.c_str(), state_.checkpoint_dir.c_str());
      state_.best_score = std::numeric_limits<double>::quiet_NaN();
      state_.top_k.clear();
    }
  }
  print_header(steps_per_epoch, epochs);
  if (std::get<0>(resumed_geometry_) > 0 && state_.epoch < epochs)
    reanchor_schedule(loader, sc, epoch_starts[static_cast<size_t>(state_.epoch)]);
  nlohmann::json extra = tuned;
  if (!cfg_.lr_find.empty() && !lr_find_done_) {  // Tuner.lr_find: its suggestion is --lr
    Profiler::Scope s(profiler_, "lr_find");
    nlohmann::json record;
    model_->train();
    res.lr_found = lr_find(lo, record);
    extra["lr_find"] = record;
    if (cfg_.lr_find == "apply" && res.lr_found > 0) {
      cfg_.lr = res.lr_found;
      sc.base_lr = cfg_.lr;
      opt_->set_lr(cfg_.lr);
    }
  }
  // ReduceLROnPlateau starts at --lr (or --lr-find's rate); a resumed run at its checkpoint's.
  const bool plateau = sc.name == "plateau";
  if (plateau && state_.plateau.lr <= 0) state_.plateau.lr = sc.base_lr;
  // Lightning's StochasticWeightAveraging: from epoch swa_start on, SWALR's rate per epoch,
  // annealed from the schedule's rate there.
  const int64_t swa_start = swa_ && !dev_run ? swa_start_epoch(cfg_) : -1;
  const double swa_lr0 =
      swa_start >= 0 ? lr_at(sc, epoch_starts[static_cast<size_t>(std::min(swa_start, epochs))])
                     : 0.0;
  write_hparams(extra);
  if (cfg_.lr_find == "only") {
    if (tb_) {
      tb_->end_hparams_session(true);
      tb_->flush();
    }
    return res;
  }

  // Lightning's sanity check: a few validation batches before the first training step, so an
  // error in the validation path (its data, a shape, memory at the evaluation batch) ends the
  // job in seconds instead of after an epoch of a queued allocation. Nothing is logged, and
  // evaluation changes no state (eval mode, no gradients), so training is the same without it.
  if (!dev_run && state_.epoch < epochs && cfg_.num_sanity_val_steps != 0 &&
      data_.val.count > 0 && val_limit != 0) {
    Profiler::Scope s(profiler_, "sanity check");
    const int64_t n = cfg_.num_sanity_val_steps < 0
                          ? val_limit
                          : std::min<int64_t>(val_limit, cfg_.num_sanity_val_steps);
    const EvalResult r = evaluate(data_.val, n);
    if (main_) {
      std::printf("sanity check: %lld validation batch%s%s, %lld images, ran (loss %.4f)\n",
                  static_cast<long long>(n), n == 1 ? "" : "es",
                  group_.world() > 1 ? " per rank" : "", static_cast<long long>(r.samples),
                  r.loss);
      std::fflush(stdout);
    }
  }

  StepScalars step_log(device_, cfg_.log_every_n_steps > 0 ? tb_.get() : nullptr);
  model_->train();
  const int num_classes = data_.train.num_classes;
  // Testing the failure paths: the rank named by MLAI_FAULT_RANK throws at step 2 (or at
  // MLAI_FAULT_STEP), or with MLAI_FAULT_KIND=hang stops there for good (a stuck rank: the
  // others' deadlines must end it).
  int64_t fault_step = 0;
  if (const char* f = std::getenv("MLAI_FAULT_RANK"); f && std::atoi(f) == group_.rank()) {
    const char* at = std::getenv("MLAI_FAULT_STEP");
    fault_step = at != nullptr ? std::max(1, std::atoi(at)) : 2;
  }
  const char* fault_kind = std::getenv("MLAI_FAULT_KIND");
  const bool fault_hang = fault_kind && std::string(fault_kind) == "hang";
  fit_clock_ = Clock::now();
  seconds_before_ = state_.train_seconds;
  last_saved_ = fit_clock_;
  checkpoint_interval_ = dev_run || cfg_.checkpoint_train_time_interval.empty()
                             ? 0.0
                             : parse_duration(cfg_.checkpoint_train_time_interval,
                                              "--checkpoint-train-time-interval");
  // Which limit ends training now ("": none); every rank decides the same (the time through
  // the per-step allreduce of stop requests).
  auto limit_reached = [&](bool time_up) -> std::string {
    if (max_steps > 0 && state_.global_step >= max_steps) return "max_steps";
    return time_up ? "max_time" : "";
  };
  auto time_up = [&] { return max_time > 0 && train_seconds() >= max_time; };
  auto say_limit = [&](const std::string& limit, int64_t epoch, int64_t batch) {
    if (!main_ || limit.empty()) return;
    if (limit == "max_steps")
      std::printf("--max-steps %lld reached", static_cast<long long>(max_steps));
    else
      std::printf("--max-time %s reached after %.1f s of training", cfg_.max_time.c_str(),
                  train_seconds());
    std::printf(": training ends at step %lld (epoch %lld, batch %lld of %lld)\n",
                static_cast<long long>(state_.global_step), static_cast<long long>(epoch + 1),
                static_cast<long long>(batch), static_cast<long long>(steps_per_epoch));
    std::fflush(stdout);
  };
  // A run resumed after its limit (the same checkpoint's own max_time or max_steps) trains no
  // further: it goes straight to the test.
  if (state_.epoch < epochs) {
    res.limit = limit_reached(max_time > 0 && seconds_before_ >= max_time);
    if (!res.limit.empty()) say_limit(res.limit, state_.epoch, state_.next_batch);
  }
  const auto trace_steps = dev_run ? std::pair<int64_t, int64_t>{-1, -1}
                                   : parse_trace_steps(cfg_.profiler_trace);
  for (int64_t epoch = state_.epoch; epoch < epochs && res.limit.empty(); ++epoch) {
    const auto t_epoch = Clock::now();
    if (device_stats_) device_stats_->start_epoch();
    const double wait_before = profiler_.total("data wait");
    // A resumed epoch continues after the samples its checkpoint had trained on (in this run's
    // ranks and batches, whatever the checkpoint's were).
    const bool fresh_epoch = state_.epoch_samples <= 0;
    const int64_t first = loader.start_epoch_at(epoch, std::max<int64_t>(state_.epoch_samples, 0));
    state_.next_batch = first;
    const bool swa_epoch = swa_start >= 0 && epoch >= swa_start;
    const int64_t accum = accumulation_at(cfg_, epoch);  // batches per optimizer step
    // The head's rate for the step about to run.
    auto rate_now = [&] {
      return plateau     ? state_.plateau.lr
             : swa_epoch ? swa_lr_at(swa_lr0, cfg_.swa_lrs, epoch - swa_start,
                                     cfg_.annealing_epochs, cfg_.annealing_strategy == "cos")
                         : lr_at(sc, std::max<int64_t>(state_.global_step + state_.schedule_shift,
                                                       0));
    };
    if (fresh_epoch) finetune_epoch_start(epoch, rate_now());
    // SWA's average takes the weights each SWA epoch starts from (once, also across a resume).
    if (swa_epoch && epoch > state_.swa_latest_epoch) {
      if (main_ && epoch == swa_start)
        std::printf("SWA from epoch %lld: averaging the weights each epoch starts from; learning "
                    "rate %g annealed (%s, %lld epochs) to --swa-lrs %g\n",
                    static_cast<long long>(epoch + 1), swa_lr0, cfg_.annealing_strategy.c_str(),
                    static_cast<long long>(cfg_.annealing_epochs), cfg_.swa_lrs);
      const double n = static_cast<double>(swa_->updates());
      swa_->update(*model_, n / (n + 1.0));  // the equal average (the first update copies)
      state_.swa_updates = swa_->updates();
      state_.swa_latest_epoch = epoch;
    }
    const bool val_epoch = (epoch + 1) % cfg_.check_val_every_n_epoch == 0 || epoch + 1 == epochs;
    int64_t next_val = (first / val_every + 1) * val_every;  // the next batch count to validate at
    Tensor loss_sum = Tensor::zeros({}, DType::kFloat32, device_);
    Tensor counts = Tensor::zeros({num_classes, num_classes}, DType::kInt64, device_);
    int64_t samples = 0;
    char label[64];
    std::snprintf(label, sizeof(label), "epoch %02lld/%02lld", static_cast<long long>(epoch + 1),
                  static_cast<long long>(epochs));
    // The batches this epoch will run: fewer when --max-steps ends it early (the progress
    // line's total and its estimate of the time left).
    int64_t epoch_batches = steps_per_epoch;
    if (max_steps > 0)
      epoch_batches = std::clamp<int64_t>(first + (max_steps - state_.global_step) * accum,
                                          first, steps_per_epoch);
    ProgressLine progress(cfg_.progress && main_, label, epoch_batches);
    LaggedMean running_loss(device_);
    int64_t stopped_at = -1;                  // training ended before the epoch's end
    std::optional<EvalResult> val_at_stop;  // the validation run at that step
    const Tensor inv_accum =
        Tensor::full({}, 1.0 / static_cast<double>(accum), DType::kFloat32, device_);
    double lr = opt_->lr();
    Tensor grad_sq;  // --log-grad-norm: the step's squared gradient norm (logged steps only)
    std::optional<trace::Span> step_span;  // --profiler-trace: this batch's whole step
    for (int64_t b = first;; ++b) {
      trace_at_step(trace_steps, b, accum, step_span);
      std::optional<io::Batch> batch;
      {
        Profiler::Scope s(profiler_, "data wait");
        batch = loader.next();
      }
      if (!batch) {  // (the epoch's end: no step to trace)
        if (step_span) step_span->cancel();
        break;
      }
      group_.abort_if_requested();  // the NCCL watchdog found a dead or hung peer
      // Under accumulation only a group's last batch steps (and, with data parallelism,
      // allreduces); the others add into the gradients.
      const bool step_now = (b + 1) % accum == 0 || b + 1 >= steps_per_epoch;
      if (reducer_ && accum > 1) reducer_->prepare_backward(step_now);
      Tensor logits, loss;
      const Mixed mixed = mix(*batch, epoch, b);  // --mixup-alpha/--cutmix-alpha, else as is
      if (b == 0 && main_) log_images(mixed.images);  // --log-images
      // The optimizer part of the step: the mean over ranks; under fp16 also 1/scale, skipped
      // on the device on overflow. --log-grad-norm: the true gradients' norm at the steps
      // TensorBoard logs (rank 0; every step under --cuda-graphs, whose graph holds it).
      const bool log_step = cfg_.log_every_n_steps > 0 &&
                            (state_.global_step + 1) % cfg_.log_every_n_steps == 0;
      auto optimizer_step = [&] {
        Profiler::Scope s(profiler_, "optimizer step");
        const bool norm = cfg_.log_grad_norm && tb_ && (log_step || graphed_);
        grad_sq = Tensor();
        take_step(1.0f / static_cast<float>(group_.world()), state_.global_step,
                  norm ? &grad_sq : nullptr);
      };
      // forward, loss and backward (seeded with the loss scale: small fp16 gradients stay
      // normal); under --cuda-graphs they start by zeroing the gradients, end with the
      // optimizer step, and run as one replayed graph once warm.
      auto forward_backward = [&](const Tensor& images, const Tensor& labels) {
        if (graphed_) opt_->zero_grad();
        Variable out, l;
        {
          Profiler::Scope s(profiler_, "forward");
          out = (*model_)(Variable(images));
          l = training_loss(out, labels, mixed);
          if (autograd::anomaly_forward() && !autograd::all_finite(l.data()) &&
              autograd::all_finite(out.data()))
            throw autograd::AnomalyError("the training loss is inf/nan (the logits were finite)");
        }
        {
          Profiler::Scope s(profiler_, "backward");
          if (accum > 1) {  // Lightning's loss / accumulate_grad_batches, in the seed
            l.backward(scaler_->enabled()
                           ? t::scale(scaler_->seed(), 1.0 / static_cast<double>(accum))
                           : inv_accum);
          } else if (scaler_->enabled()) {
            l.backward(scaler_->seed());
          } else {
            l.backward();
          }
          // ZeRO stage 3: what backward left gathered (the root unit, frozen units) goes.
          if (zero_) zero_->release_units();
        }
        return std::pair<Tensor, Tensor>(out.data(), l.data());
      };
      bool stepped = false;  // the graph's replay took the optimizer step
      const int64_t flops_before = autograd::flop_count();
      if (graphed_) {
        // The whole step, optimizer included (--cuda-graphs refuses accumulation and data
        // parallelism, so every batch steps here). The optimizer reads its rate and step number
        // from the device buffer staged here, which a replay cannot do for itself.
        lr = rate_now();
        opt_->set_lr(lr);
        opt_->set_step_count(state_.global_step, scaler_->skipped_counter());
        opt_->stage();
        auto whole_step = [&](const Tensor& images, const Tensor& labels) {
          auto out = forward_backward(images, labels);
          optimizer_step();
          graphed_grad_sq_ = grad_sq;  // (a graph's buffer once captured)
          return out;
        };
        if (graphed_->run(mixed.images, batch->labels, whole_step)) {
          logits = graphed_->logits();
          loss = graphed_->loss();
          grad_sq = log_step ? graphed_grad_sq_ : Tensor();
          opt_->set_step_count(state_.global_step + 1, scaler_->skipped_counter());
          stepped = true;
        }
      }
      if (!stepped) {
        try {
          std::tie(logits, loss) = forward_backward(mixed.images, batch->labels);
        } catch (const autograd::AnomalyError& e) {  // (--detect-anomaly) where in training
          throw autograd::AnomalyError(
              "--detect-anomaly at step " + std::to_string(state_.global_step) + " (epoch " +
              std::to_string(epoch + 1) + ", batch " + std::to_string(b) + "): " + e.what());
        }
      }
      // The step's matrix products per sample, where they ran (a replayed graph runs no ops).
      if (const int64_t flops = autograd::flop_count() - flops_before; flops > 0)
        flops_per_sample_ = static_cast<double>(flops) /
                            static_cast<double>(std::max<int64_t>(batch->labels.numel(), 1));
      if (reducer_ && (step_now || reducer_->shards_gradients())) {
        Profiler::Scope s(profiler_, "gradient sync");
        reducer_->finish();  // buckets hold the sums over ranks (zero2: every backward's)
      }
      if (step_now) {
        if (!stepped) {
          lr = rate_now();
          opt_->set_lr(lr);
          optimizer_step();
        }
        if (reducer_) {
          reducer_->zero_grad();
        } else if (!graphed_) {  // (graphed steps zero the gradients at their start)
          opt_->zero_grad();
        }
      }
      if (step_now && ema_ && state_.global_step >= cfg_.ema_start_step) {
        Profiler::Scope s(profiler_, "weight average");
        ema_->update(*model_);
        state_.ema_updates = ema_->updates();
      }
      if (step_now && fault_step > 0 && state_.global_step + 1 == fault_step) {
        while (fault_hang) std::this_thread::sleep_for(std::chrono::seconds(1));
        throw std::runtime_error("fault injected by MLAI_FAULT_RANK at step " +
                                 std::to_string(fault_step));
      }
      const int64_t rows = batch->labels.numel();
      t::axpy_(static_cast<double>(rows), loss, loss_sum);
      // Under MixUp/CutMix, against the label with the larger share of the mixed sample.
      t::confusion_update_(t::max_dim(logits, 1).second,
                           mixed.lambda < 0.5 ? mixed.rolled_labels : batch->labels, counts);
      samples += rows;
      if (step_now && ++state_.global_step % std::max<int64_t>(cfg_.log_every_n_steps, 1) == 0)
        step_log.record(state_.global_step, loss, lr, grad_sq);
      state_.next_batch = b + 1;
      state_.epoch_samples = loader.samples_before(b + 1);
      const double el = seconds_since(t_epoch);
      // The running loss, read only when the line is redrawn, and on a GPU a few steps late.
      progress.update(
          b + 1, [&] { return running_loss.read(loss_sum, samples); }, el > 0 ? samples / el : 0);
      if (!step_now) continue;  // a stop waits for the group's step: nothing half-accumulated
      std::optional<EvalResult> val_now;
      bool stop_asked = false;
      if (val_epoch && b + 1 >= next_val && b + 1 < steps_per_epoch) {
        next_val = ((b + 1) / val_every + 1) * val_every;
        progress.finish();
        val_now.emplace();
        stop_asked = validate_within_epoch(epoch, b, val_limit, *val_now);
      }
      // (an early stop asked for earlier happens at the step --min-steps is reached)
      res.early_stopped = early_stop_due(stop_asked, epoch);
      const int stop = stop_requested(time_up());
      if (stop <= 0) res.limit = limit_reached(stop < 0);
      // Training ends with this step (a signal at the same step wins: it asks for a stop now,
      // with a checkpoint, not for the final validation and test).
      if (stop <= 0 && (res.early_stopped || !res.limit.empty())) {
        say_limit(res.limit, epoch, b + 1);
        if (b + 1 < steps_per_epoch) {
          stopped_at = b + 1;
          val_at_stop = std::move(val_now);
          break;
        }
        continue;  // the epoch's last batch: the epoch ends as usual
      }
      // After the validation at this step, so the checkpoint holds its best score. Not at the
      // epoch's last batch: the epoch's end follows at once (and resuming there would replay
      // an empty epoch).
      // --checkpoint-train-time-interval: on rank 0's clock (only rank 0 writes).
      if (b + 1 < steps_per_epoch &&
          ((cfg_.checkpoint_every_n_steps > 0 &&
            state_.global_step % cfg_.checkpoint_every_n_steps == 0) ||
           checkpoint_due())) {
        state_.epoch = epoch;  // in progress: a resume continues at next_batch
        save("last.h5");
      }
      if (const int sig = stop) {
        progress.finish();
        step_log.flush();
        state_.epoch = epoch;
        save("last.h5", /*resumable=*/true);
        finish_checkpoint_write();  // (--async-checkpoint: on disk before the exit)
        if (main_)
          std::printf("stopped by signal %d at epoch %lld, batch %lld: %s\n", sig,
                      static_cast<long long>(epoch + 1), static_cast<long long>(b + 1),
                      dev_run ? "fast_dev_run, nothing saved"
                              : ("checkpoint saved to " + dir_ + "/checkpoints/last.h5").c_str());
        res.stop_signal = sig;
        if (zero_) zero_->unshard();  // (the model is whole after fit())
        g_stop_signal.store(0);  // consumed: a later fit() in this process runs normally
        res.global_step = state_.global_step;
        res.epochs_completed = epoch;
        step_span.reset();
        if (trace::enabled()) end_trace(trace_steps);
        return res;
      }
    }
    step_span.reset();
    progress.finish();
    step_log.flush();
    const bool last = epoch + 1 == epochs || res.early_stopped || !res.limit.empty();
    EpochTotals totals{epoch,   epochs,    loss_sum, counts,     samples,         wait_before,
                       lr,      t_epoch,   val_epoch, last,      stopped_at,      steps_per_epoch,
                       std::move(val_at_stop)};
    if (end_epoch(totals, val_limit, res)) break;  // early stopping
    if (!res.limit.empty()) break;
  }
  if (trace_steps.first >= 0) end_trace(trace_steps);  // (also says when there was none)
  // SWA ends when training ran through its last epoch (not when stopped early, as Lightning).
  if (swa_start >= 0 && !state_.swa_done && state_.epoch >= epochs && !res.early_stopped &&
      res.limit.empty())
    finish_swa(loader, epochs, val_limit, res);
  res.epochs_completed = state_.epoch;
  res.global_step = state_.global_step;
  // Lightning's WeightAveraging at the end of training: the model takes the average, which the
  // test (and anything after fit()) uses (under ZeRO each owner its own parameters', first).
  if (ema_) copy_average(*ema_);
  // ZeRO's sharded masters (and stage 3's parameters) gathered: the test, and whoever reads
  // the model after fit(), see every weight on every rank.
  if (zero_) zero_->unshard();
  finish_checkpoint_write();  // (--async-checkpoint: best.h5 and last.h5 in place for the test)

  test_and_report(res);
  report_profile(seconds_since(t_start));
  return res;
}

}  // namespace mlai::nn
