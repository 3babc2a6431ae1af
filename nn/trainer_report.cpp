// The run's reporting side of the trainer (see trainer.h): the experiment directory and its
// logs, the end of an epoch (global metrics, the epoch line, metrics.csv and TensorBoard,
// when to checkpoint: the writes are in trainer_checkpoint.cpp). Weight averages' swaps and SWA's end are in trainer_average.cpp. The final test and --validate-only are in trainer_evaluate.cpp. What runs after each validation (best.h5, the
// top k, early stopping) is in trainer_callbacks.cpp.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>
#include <vector>

#include "dist/watchdog.h"
#include "io/image_encode.h"
#include "io/tensorboard.h"
#include "kernels/parallel.h"
#include "nn/config_file.h"
#include "nn/lr_schedule.h"
#include "nn/trainer.h"

namespace mlai::nn {

std::string confusion_json(const io::ConfusionMatrix& cm) {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < cm.num_classes(); ++i) {
    nlohmann::json r = nlohmann::json::array();
    for (int j = 0; j < cm.num_classes(); ++j) r.push_back(cm.count(i, j));
    rows.push_back(r);
  }
  return rows.dump();
}

namespace {
// The run's settings for TensorBoard's HPARAMS tab (as Lightning's TensorBoardLogger logs its
// hyperparameters): numbers, bools and strings as they are, lists as their JSON text.
std::vector<io::HParam> tb_hparams(const nlohmann::json& config, int world) {
  std::vector<io::HParam> hp;
  for (const auto& [name, v] : config.items()) {
    if (v.is_boolean())
      hp.push_back({name, v.get<bool>()});
    else if (v.is_number())
      hp.push_back({name, v.get<double>()});
    else if (v.is_string())
      hp.push_back({name, v.get<std::string>()});
    else if (!v.is_null())
      hp.push_back({name, v.dump()});
  }
  hp.push_back({"world_size", static_cast<double>(world)});
  return hp;
}

const std::vector<std::string> kCsvColumns = {"epoch",
                                              "step",
                                              "lr",
                                              "train_loss",
                                              "train_accuracy",
                                              "val_loss",
                                              "val_accuracy",
                                              "val_precision",
                                              "val_recall",
                                              "val_f1",
                                              "images_per_sec",
                                              "epoch_seconds",
                                              "data_wait_fraction",
                                              "loss_scale",
                                              "skipped_steps",
                                              "val_confusion",
                                              "test_loss",
                                              "test_accuracy",
                                              "test_precision",
                                              "test_recall",
                                              "test_f1",
                                              "test_confusion",
                                              "val_top5_accuracy",
                                              "test_top5_accuracy",
                                              "lr_backbone",
                                              "gpu_peak_mem_mb",
                                              "gpu_reserved_mb",
                                              "cpu_tensor_peak_mb",
                                              "host_rss_mb",
                                              "host_peak_rss_mb",
                                              "host_cpu_percent",
                                              "tflops_per_device",
                                              "mfu"};
}  // namespace

io::ConfusionMatrix Trainer::to_matrix(const Tensor& counts, const io::Dataset& ds) {
  io::ConfusionMatrix cm(ds.num_classes, ds.class_names);
  cm.add_counts(counts.to_vector<int64_t>().data());
  return cm;
}

void Trainer::log_images(const Tensor& images) {
  if (!tb_ || cfg_.log_images <= 0) return;
  const io::Dataset& d = data_.train;
  const int64_t n = std::min(cfg_.log_images, images.size(0));
  const std::vector<float> host = images.to(DType::kFloat32).to_vector<float>();
  const io::Picture grid =
      io::image_grid(host.data(), n, d.height, d.width, static_cast<int>(d.channels), d.mean, d.std);
  tb_->add_image("train/images", io::encode_png(grid), grid.height, grid.width, grid.channels,
                 state_.global_step);
}

void Trainer::log_per_class(const io::ConfusionMatrix& cm, const std::string& split) {
  if (!tb_ || !cfg_.log_per_class) return;
  for (int c = 0; c < cm.num_classes(); ++c) {
    std::string name = cm.name(c);  // ("T-shirt/top": a slash would nest TensorBoard's groups)
    std::replace(name.begin(), name.end(), '/', '-');
    tb_->add_scalar(split + "/recall/" + name, static_cast<float>(cm.recall(c)), state_.global_step);
    tb_->add_scalar(split + "/precision/" + name, static_cast<float>(cm.precision(c)),
                    state_.global_step);
  }
}

void Trainer::open_logs(FitResult& res) {
  if (!dev_run_ && main_) {
    dir_ = make_version_dir(cfg_.log_dir, cfg_.experiment_name);
    res.version_dir = dir_;
    csv_ = std::make_unique<io::CsvLogger>(dir_ + "/metrics.csv", kCsvColumns);
    tb_ = std::make_unique<io::EventWriter>(dir_);
    std::printf("logging to %s\n", dir_.c_str());
  } else if (main_) {
    std::printf("fast_dev_run: %lld batch(es), no logs or checkpoints\n",
                static_cast<long long>(cfg_.fast_dev_run));
  }
  // Each rank of a sharded checkpoint writes into rank 0's run directory.
  if (!dev_run_)
    checkpoint_dir_ = cfg_.state_dict_type == "sharded"
                          ? dist::broadcast_string(group_, dir_ + "/checkpoints")
                          : dir_ + "/checkpoints";
}

void Trainer::write_hparams(const nlohmann::json& extra) {
  if (dev_run_ || !main_) return;
  nlohmann::json hp;
  hp["config"] = to_json(cfg_);
  hp["machine"] = machine_info(device_.str(), command_line_);
  hp["data"] = {
      {"train", data_.train.count}, {"val", data_.val.count}, {"test", data_.test.count}};
  for (const auto& [k, v] : extra.items()) hp[k] = v;
  std::ofstream(dir_ + "/hparams.json") << hp.dump(2) << "\n";
  // LightningCLI's config.yaml: `mlai_train --config .../config.yaml` runs this again.
  std::ofstream(dir_ + "/config.yaml") << config_yaml(cfg_);
  tb_->add_hparams(tb_hparams(hp["config"], group_.world()));
  tb_->flush();
}

void Trainer::print_header(int64_t steps_per_epoch, int64_t epochs) {
  if (!main_) return;
  std::printf("model %s on %s: %lld parameters; %lld training batches of %lld per epoch\n%s",
              cfg_.arch.c_str(), device_.str().c_str(),
              static_cast<long long>(model_->parameter_count()),
              static_cast<long long>(steps_per_epoch), static_cast<long long>(cfg_.batch_size),
              model_summary(*model_, &module_flops_).c_str());
  // The accumulation of each stretch of epochs that has one (--accumulation-schedule: several).
  for (int64_t e = 0; e < epochs;) {
    const int64_t accum = accumulation_at(cfg_, e);
    int64_t end = e + 1;
    while (end < epochs && accumulation_at(cfg_, end) == accum) ++end;
    const bool scheduled = !cfg_.accumulation_schedule.empty();
    if (scheduled)
      std::printf("epochs %lld-%lld: ", static_cast<long long>(e + 1), static_cast<long long>(end));
    if (accum > 1)
      std::printf(
          "accumulating the gradients of %lld batches per optimizer step: an effective "
          "batch of %lld, %lld optimizer steps per epoch\n",
          static_cast<long long>(accum),
          static_cast<long long>(accum * cfg_.batch_size * group_.world()),
          static_cast<long long>((steps_per_epoch + accum - 1) / accum));
    else if (scheduled)
      std::printf("an optimizer step per batch (an effective batch of %lld)\n",
                  static_cast<long long>(cfg_.batch_size * group_.world()));
    e = end;
  }
  if (main_ && (cfg_.mixup_alpha > 0 || cfg_.cutmix_alpha > 0)) {
    char mixup[64] = "", cutmix[64] = "";
    if (cfg_.mixup_alpha > 0) std::snprintf(mixup, sizeof(mixup), "MixUp (alpha %g)", cfg_.mixup_alpha);
    if (cfg_.cutmix_alpha > 0)
      std::snprintf(cutmix, sizeof(cutmix), "CutMix (alpha %g)", cfg_.cutmix_alpha);
    const bool both = cfg_.mixup_alpha > 0 && cfg_.cutmix_alpha > 0;
    std::printf("mixing each training batch: %s%s%s%s; the training loss is against the mixed "
                "labels, the training accuracy against the label with the larger share\n",
                mixup, both ? " or " : "", cutmix, both ? ", evenly" : "");
  }
  if (main_ && ema_)
    std::printf("weight averaging: an exponential moving average of the weights and batch-norm "
                "statistics (decay %g) from optimizer step %lld; validation, checkpoints and "
                "the test use it\n",
                cfg_.ema_decay, static_cast<long long>(cfg_.ema_start_step));
  if (main_ && precision_ != Precision::kFloat32)
    std::printf(
        "mixed precision (--precision %s): %s working weights and activations, float32 "
        "master weights and batch norm%s%s\n",
        precision_name(precision_), precision_ == Precision::kFloat16 ? "fp16" : "bf16",
        scaler_->enabled() ? ", dynamic loss scaling from 65536" : ", no loss scaling",
        device_.is_cpu() ? " (on the CPU: float arithmetic on fp16/bf16 storage, for "
                           "testing; no faster than --precision 32)"
                         : "");
  std::fflush(stdout);
}

// Reduces the epoch's training sums over ranks, validates (unless --check-val-every-n-epoch
// skips this epoch), prints the epoch line, logs, checkpoints and decides early stopping
// (true: stop).
bool Trainer::end_epoch(EpochTotals& e, int64_t val_limit, FitResult& res) {
  const int64_t epoch = e.epoch, epochs = e.epochs;
  const bool val_epoch = e.val_epoch;
  const double lr = e.lr, wait_before = e.wait_before;
  const auto t_epoch = e.start;
  Tensor& loss_sum = e.loss_sum;
  Tensor& counts = e.counts;
  int64_t samples = e.samples;
  Tensor n = Tensor::full({}, static_cast<double>(samples), DType::kFloat32, device_);
  allreduce(loss_sum);
  allreduce(counts);
  allreduce(n);
  samples = static_cast<int64_t>(n.item());
  const double train_seconds = seconds_since(t_epoch);
  const double train_loss = loss_sum.item() / static_cast<double>(std::max<int64_t>(samples, 1));
  const io::ConfusionMatrix train_cm = to_matrix(counts, data_.train);
  const bool partial = e.stopped_at >= 0;  // training ended within the epoch
  EvalResult val;
  if (e.val_now) {  // validated at the step training ended on: not again
    val = *e.val_now;
  } else if (val_epoch || e.last) {  // --check-val-every-n-epoch; the last epoch always
    Profiler::Scope s(profiler_, "validation");
    val = evaluate(data_.val, val_limit);
  }
  // An epoch that skipped its validation changes neither best.h5 nor early stopping.
  const bool validated = val_epoch || e.last || data_.val.count == 0;
  const double epoch_seconds = seconds_since(t_epoch);
  const double wait_frac =
      (profiler_.total("data wait") - wait_before) / std::max(train_seconds, 1e-9);
  const double ips = samples / std::max(train_seconds, 1e-9);
  // Lightning's ThroughputMonitor: the matrix products' FLOPs each device did per second, and
  // that rate's share of the device's peak (MFU).
  const double flops_per_device = flops_per_sample_ * ips / group_.world();
  const double mfu = peak_flops_ > 0 ? flops_per_device / peak_flops_ : 0;
  res.flops_per_sample = flops_per_sample_;
  res.tflops_per_device = flops_per_device * 1e-12;
  res.mfu = mfu;
  const double loss_scale = scaler_->enabled() ? scaler_->scale() : 1.0;
  const int64_t skipped = scaler_->enabled() ? scaler_->skipped_steps() : 0;
  res.loss_scale = loss_scale;
  res.skipped_steps = skipped;
  // --log-device-stats: this epoch's use, the largest of any rank (every rank takes part).
  std::optional<DeviceStats> dstats;
  if (device_stats_) {
    DeviceStats d = device_stats_->read();
    if (group_.world() > 1)
      for (double* v : {&d.gpu_peak_mb, &d.gpu_reserved_mb, &d.cpu_tensor_peak_mb,
                        &d.host_rss_mb, &d.host_peak_rss_mb, &d.host_cpu_percent})
        *v = dist::allreduce_host(group_, *v, /*max=*/true);
    dstats = d;
  }
  if (main_) {
    std::printf("epoch: %02lld/%02lld    training loss: %.4f    training accuracy %.4f",
                static_cast<long long>(epoch + 1), static_cast<long long>(epochs), train_loss,
                train_cm.accuracy());
    if (val.samples > 0)
      std::printf("    validation loss: %.4f    validation accuracy: %.4f", val.loss,
                  val.confusion.accuracy());
    if (val.samples > 0 && val.top5 >= 0 && val.confusion.num_classes() > kManyClasses)
      std::printf("    validation top-5: %.4f", val.top5);
    if (scaler_->enabled())
      std::printf("    loss scale: %g    skipped steps: %lld", loss_scale,
                  static_cast<long long>(skipped));
    if (partial)
      std::printf("    (ended at batch %lld of %lld)", static_cast<long long>(e.stopped_at),
                  static_cast<long long>(e.batches));
    if (dstats) {
      if (dstats->gpu_peak_mb >= 0)
        std::printf("    GPU memory: %.0f MiB peak, %.0f reserved", dstats->gpu_peak_mb,
                    dstats->gpu_reserved_mb);
      if (dstats->cpu_tensor_peak_mb >= 0)
        std::printf("    tensor memory: %.0f MiB peak", dstats->cpu_tensor_peak_mb);
      std::printf("    host memory: %.0f MiB (peak %.0f)    CPU: %.0f%%", dstats->host_rss_mb,
                  dstats->host_peak_rss_mb, dstats->host_cpu_percent);
    }
    std::printf("    time: %.1fs    images/s: %.0f", epoch_seconds, ips);
    if (flops_per_device > 0) std::printf("    TFLOP/s per device: %.3g", flops_per_device * 1e-12);
    if (mfu > 0) std::printf(" (MFU %.1f%%)", 100 * mfu);
    std::printf("\n");
    if (!loader_hint_shown_ && !dev_run_) {
      const std::string hint =
          loader_hint(wait_frac, cfg_.workers, kernels::cpu::pool_threads(), cfg_.dataset,
                      cfg_.cache, device_.is_cpu() ? cfg_.auto_augment : "");
      if (!hint.empty())
        std::printf("hint: epoch %lld %s\n", static_cast<long long>(epoch + 1), hint.c_str());
      loader_hint_shown_ = !hint.empty();
    }
    std::fflush(stdout);
  }
  res.last_train_loss = train_loss;
  if (val.samples > 0) res.val = val;  // an epoch that skipped validation keeps the last one
  // Training that ended within the epoch resumes there: last.h5 continues at its next batch.
  state_.epoch = partial ? epoch : epoch + 1;
  state_.next_batch = partial ? e.stopped_at : 0;
  if (!partial) state_.epoch_samples = 0;
  // Early stopping on the global validation metrics: every rank decides the same. A
  // validation within the epoch has already counted (validate_within_epoch).
  const bool asked = cfg_.early_stopping() && !dev_run_ && validated && !e.val_now &&
                     early_stopping_update(val);
  if (early_stop_due(asked, partial ? epoch : epoch + 1)) res.early_stopped = true;
  const bool stop_early = res.early_stopped;
  // ReduceLROnPlateau, stepped as Lightning steps an epoch-interval scheduler: at the end of
  // an epoch that validated (not one that training left part-way: it ends when resumed).
  if (cfg_.lr_schedule == "plateau" && !dev_run_ && !partial && val.samples > 0 &&
      (val_epoch || e.last || e.val_now)) {
    PlateauConfig pc;
    pc.maximize = cfg_.plateau_monitor == "val_accuracy";
    pc.factor = cfg_.lr_gamma;
    pc.patience = cfg_.plateau_patience;
    pc.threshold = cfg_.plateau_threshold;
    pc.cooldown = cfg_.plateau_cooldown;
    pc.min_lr = cfg_.min_lr;
    const double before = state_.plateau.lr;
    const double metric = pc.maximize ? val.confusion.accuracy() : val.loss;
    if (plateau_step(pc, state_.plateau, metric) && main_) {
      std::printf("%s has not improved for %lld epoch(s) (best %.4f): learning rate %g -> %g\n",
                  cfg_.plateau_monitor.c_str(), static_cast<long long>(cfg_.plateau_patience + 1),
                  state_.plateau.best, before, state_.plateau.lr);
      std::fflush(stdout);
    }
  }
  // best.h5 (and the top k) whenever validation improves (Lightning's ModelCheckpoint), on
  // every rank alike (save() writes on rank 0 only); without a validation set, by the training
  // metric. last.h5 every --checkpoint-every epochs and at the end.
  const bool by_loss = cfg_.checkpoint_monitor == "val_loss";
  const double score = val.samples > 0 ? (by_loss ? val.loss : val.confusion.accuracy())
                                       : (by_loss ? train_loss : train_cm.accuracy());
  if (validated && !e.val_now) keep_if_best(score, epoch);
  const bool periodic = cfg_.checkpoint_every > 0 && (epoch + 1) % cfg_.checkpoint_every == 0;
  if (periodic || e.last || stop_early || checkpoint_due()) save("last.h5");
  // --log-histograms reads every master on rank 0: sharded ones are gathered there.
  const MastersOnRank0 whole(cfg_.log_histograms && !dev_run_ ? zero_.get() : nullptr);
  if (!dev_run_ && main_) {
    // Cells of what this epoch did not measure stay empty (not zeros that plot as drops).
    std::map<std::string, io::CsvLogger::Value> row{{"epoch", epoch + 1},
                                                    {"step", state_.global_step},
                                                    {"lr", lr},
                                                    {"images_per_sec", ips},
                                                    {"epoch_seconds", epoch_seconds},
                                                    {"data_wait_fraction", wait_frac},
                                                    {"loss_scale", loss_scale},
                                                    {"skipped_steps", skipped}};
    std::vector<std::pair<const char*, double>> scalars{
        {"lr", lr}, {"images_per_sec", ips}, {"data_wait_fraction", wait_frac}};
    if (samples > 0) {  // (none when resumed at the epoch's very end)
      row.insert({{"train_loss", train_loss}, {"train_accuracy", train_cm.accuracy()}});
      scalars.insert(scalars.end(),
                     {{"train/loss", train_loss}, {"train/accuracy", train_cm.accuracy()}});
    }
    if (val.samples > 0) {
      row.insert({{"val_loss", val.loss},
                  {"val_accuracy", val.confusion.accuracy()},
                  {"val_precision", val.confusion.macro_precision()},
                  {"val_recall", val.confusion.macro_recall()},
                  {"val_f1", val.confusion.macro_f1()},
                  {"val_confusion", confusion_json(val.confusion)}});
      scalars.insert(scalars.end(),
                     {{"val/loss", val.loss}, {"val/accuracy", val.confusion.accuracy()}});
      if (val.top5 >= 0) {
        row.insert({"val_top5_accuracy", val.top5});
        scalars.push_back({"val/top5_accuracy", val.top5});
      }
    }
    if (flops_per_device > 0) {
      row.insert({"tflops_per_device", flops_per_device * 1e-12});
      scalars.push_back({"throughput/tflops_per_device", flops_per_device * 1e-12});
    }
    if (mfu > 0) {
      row.insert({"mfu", mfu});
      scalars.push_back({"throughput/mfu", mfu});
    }
    if (opt_->group_count() > 1) {  // --unfreeze-backbone-at-epoch: the backbone's rate
      row.insert({"lr_backbone", opt_->group_lr(1)});
      scalars.push_back({"lr_backbone", opt_->group_lr(1)});
    }
    if (dstats) {
      const struct {
        const char *column, *tag;
        double value;
      } stats[] = {
          {"gpu_peak_mem_mb", "device_stats/gpu_peak_mem_mb", dstats->gpu_peak_mb},
          {"gpu_reserved_mb", "device_stats/gpu_reserved_mb", dstats->gpu_reserved_mb},
          {"cpu_tensor_peak_mb", "device_stats/cpu_tensor_peak_mb", dstats->cpu_tensor_peak_mb},
          {"host_rss_mb", "device_stats/host_rss_mb", dstats->host_rss_mb},
          {"host_peak_rss_mb", "device_stats/host_peak_rss_mb", dstats->host_peak_rss_mb},
          {"host_cpu_percent", "device_stats/host_cpu_percent", dstats->host_cpu_percent}};
      for (const auto& st : stats) {
        if (st.value < 0) continue;  // (no GPU; or no CPU tensors to count, on a GPU run)
        row.insert({st.column, st.value});
        scalars.push_back({st.tag, st.value});
      }
    }
    if (scaler_->enabled())
      scalars.insert(scalars.end(), {{"train/loss_scale", loss_scale},
                                     {"train/skipped_steps", static_cast<double>(skipped)}});
    csv_->log(row);
    for (const auto& [tag, v] : scalars)
      tb_->add_scalar(tag, static_cast<float>(v), state_.global_step);
    if (val.samples > 0 && validated && !e.val_now) log_per_class(val.confusion, "val");
    // --log-histograms: each parameter's values (the training weights, float32 masters).
    if (cfg_.log_histograms) {
      Profiler::Scope ps(profiler_, "histograms");
      for (const auto& [name, v] : model_->named_parameters())
        tb_->add_histogram("weights/" + name, v.data().to_vector<float>(), state_.global_step);
    }
    tb_->flush();
  }
  if (stop_early && main_)
    std::printf("early stopping at epoch %lld, step %lld: %s\n", static_cast<long long>(epoch + 1),
                static_cast<long long>(state_.global_step), early_stop_reason_.c_str());
  return stop_early;
}

std::string loader_hint(double wait_fraction, int workers, int cpus, const std::string& dataset,
                        bool cached, const std::string& worker_augment) {
  if (!(wait_fraction >= 0.10)) return "";
  std::vector<std::string> tries;
  char buf[160];
  if (workers == 0) {
    std::snprintf(buf, sizeof(buf),
                  "--workers N (0 loads every batch in the training thread; this rank may use "
                  "%d CPUs)", cpus);
    tries.emplace_back(buf);
  } else if (workers < cpus) {
    std::snprintf(buf, sizeof(buf), "more --workers (this rank may use %d CPUs)", cpus);
    tries.emplace_back(buf);
  }
  if (dataset == "folder" && !cached)
    tries.push_back("--cache (decode the images once) or packing the folder with mlai_convert "
                    "--from folder");
  if (dataset == "hdf5" && !cached) tries.push_back("--cache (read the file into memory once)");
  if (worker_augment == "augmix")
    tries.push_back(
        "a lighter --auto-augment than augmix (the workers run it here; it costs "
        "about 10 times ta_wide)");
  else if (!worker_augment.empty() && worker_augment != "none")
    tries.push_back("--auto-augment none (the workers run " + worker_augment + " here)");
  if (tries.empty()) return "";
  std::snprintf(buf, sizeof(buf),
                "waited for batches %.0f%% of its training time with --workers %d: the data "
                "loader holds training up; try ",
                100 * wait_fraction, workers);
  std::string hint = buf;
  for (size_t i = 0; i < tries.size(); ++i) {
    if (i > 0) hint += ", or ";
    hint += tries[i];
  }
  return hint;
}

void Trainer::report_profile(double wall) {
  const int world = group_.world();
  if (world > 1) {
    // Every action any code path of the trainer times, in one order on every rank.
    static const char* const kActions[] = {"lr_find",        "data wait",      "mixup/cutmix",
                                           "forward",        "backward",       "gradient sync",
                                           "optimizer step", "weight average", "validation",
                                           "swa batch norm", "test",           "checkpoint"};
    for (const char* a : kActions) {
      const double t = profiler_.total(a);
      Profiler::Spread s;
      s.max = dist::allreduce_host(group_, t, true);
      if (s.max <= 0) continue;  // no rank ran it
      s.min = -dist::allreduce_host(group_, -t, true);
      s.mean = dist::allreduce_host(group_, t) / world;
      s.slowest = static_cast<int>(
          dist::allreduce_host(group_, t == s.max ? static_cast<double>(group_.rank()) : -1.0, true));
      profiler_.set_spread(a, s);
    }
  }
  if (!main_) return;
  std::printf("%s", profiler_.report(wall).c_str());
  if (!dev_run_ && !dir_.empty()) {
    const std::string path = dir_ + "/profile.json";
    std::ofstream(path + ".tmp") << profiler_.to_json(wall, world).dump(2) << "\n";
    std::filesystem::rename(path + ".tmp", path);
  }
}

}  // namespace mlai::nn
