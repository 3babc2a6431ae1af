// Trainer's construction (see trainer.h): the device, the data, the model (fresh, from
// --pretrained or from --resume), the optimizer, mixed precision, weight averages and CUDA
// graphs; under mpirun/srun the communicators, ZeRO, the reducer and SyncBatchNorm are in
// trainer_parallel.cpp. The step plan and the schedule's place are in trainer_schedule.cpp.
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "dist/communicator.h"
#include "io/image_folder.h"
#include "nn/activation_checkpointing.h"
#include "nn/conv_layers.h"
#include "nn/finetune.h"
#include "nn/models.h"
#include "nn/throughput.h"
#include "nn/trainer.h"
#include "tensor/determinism.h"

namespace mlai::nn {

namespace t = mlai::tensor;

namespace {
// One GPU per rank, picked by the local rank; the CPU otherwise.
t::Device select_device(const std::string& spec, const dist::ProcessGroup& g) {
  t::Device d = t::parse_device(spec);
  if (d.is_cpu() || g.world() == 1) return d;
  const int gpus = t::cuda_device_count();
  if (g.local_world() > gpus)
    throw std::runtime_error("this node has " + std::to_string(gpus) + " CUDA device(s) but " +
                             std::to_string(g.local_world()) +
                             " ranks run on it: start at most one rank per GPU");
  return t::Device::cuda(g.local_rank());
}

// --mean/--std: every split normalized with the given values instead of the data set's own
// (the training split's); checkpoints and hparams.json then record these.
void set_normalization(io::DataSplits& d, const std::vector<double>& mean,
                       const std::vector<double>& stdev) {
  const auto channels = static_cast<size_t>(d.train.channels);
  if (mean.size() != channels)
    throw std::invalid_argument("--mean/--std: " + std::to_string(mean.size()) +
                                " value(s) each, but the data set's images have " +
                                std::to_string(channels) + " channel(s)");
  for (io::Dataset* s : {&d.train, &d.val, &d.test}) {
    s->mean.assign(mean.begin(), mean.end());
    s->std.assign(stdev.begin(), stdev.end());
  }
}
}  // namespace

std::vector<double> class_weight_values(const std::string& spec, const io::Dataset& train) {
  const int64_t k = train.num_classes;
  if (spec != "balanced") {
    std::vector<double> w = parse_class_weights(spec);
    if (static_cast<int64_t>(w.size()) != k)
      throw std::invalid_argument("--class-weights: " + std::to_string(w.size()) +
                                  " weight(s) for " + std::to_string(k) + " classes");
    return w;
  }
  // sklearn's "balanced": n_samples / (n_classes x count_c), over the training split.
  std::vector<int64_t> count(static_cast<size_t>(k), 0);
  for (int64_t y : train.labels)
    if (y >= 0 && y < k) ++count[static_cast<size_t>(y)];
  std::vector<double> w;
  for (int64_t c = 0; c < k; ++c) {
    if (count[static_cast<size_t>(c)] == 0)
      throw std::invalid_argument(
          "--class-weights balanced: class " +
          (static_cast<size_t>(c) < train.class_names.size() ? train.class_names[static_cast<size_t>(c)]
                                                            : std::to_string(c)) +
          " has no training samples (give the weights instead)");
    w.push_back(static_cast<double>(train.labels.size()) /
                (static_cast<double>(k) * static_cast<double>(count[static_cast<size_t>(c)])));
  }
  return w;
}

Trainer::Trainer(Config cfg, std::string command_line, dist::ProcessGroup& group)
    : cfg_(std::move(cfg)),
      command_line_(std::move(command_line)),
      group_(group),
      main_(group.is_main()) {
  cfg_.validate();
  // --resume last (Lightning's ckpt_path="last"): the experiment's newest last.h5; without one
  // the run starts afresh, as Lightning does, and says so.
  if (cfg_.resume == "last") {
    cfg_.resume = find_last_checkpoint(cfg_.log_dir, cfg_.experiment_name);
    if (main_ && cfg_.resume.empty())
      std::printf("--resume last: no last.h5 under %s/%s yet; starting afresh\n",
                  cfg_.log_dir.c_str(), cfg_.experiment_name.c_str());
    else if (main_)
      std::printf("--resume last: %s\n", cfg_.resume.c_str());
  }
  group_.set_timeout(cfg_.dist_timeout);
  device_ = select_device(cfg_.device, group_);
  t::set_current_device(device_);
  t::set_deterministic(cfg_.deterministic);  // cuDNN: reproducible algorithms only
  t::set_cudnn_benchmark(cfg_.cudnn_benchmark);
  kernels::set_float32_matmul_precision(parse_matmul_precision(cfg_.float32_matmul_precision));
  if (main_ && device_.is_cuda() && parse_precision(cfg_.precision) == Precision::kFloat32 &&
      cfg_.float32_matmul_precision == "highest")
    std::printf("hint: float32 on a GPU: --float32-matmul-precision high lets GEMMs and "
                "convolutions use TF32 tensor cores (as Lightning suggests "
                "torch.set_float32_matmul_precision('high')); --precision 16 or bf16 is faster still\n");
  io::FolderOptions folder;
  if (!cfg_.image_size.empty())
    std::tie(folder.height, folder.width) = io::parse_image_size(cfg_.image_size, "--image-size");
  folder.channels = cfg_.image_channels;
  // Long for a large folder: say what is happening (a missing folder is the error's alone).
  if (main_ && cfg_.dataset == "folder" && std::filesystem::is_directory(cfg_.data_dir)) {
    std::printf("image folder %s: listing the files%s, measuring the statistics%s...\n",
                cfg_.data_dir.c_str(),
                cfg_.image_size.empty() || cfg_.image_channels == 0
                    ? ", reading every header (--image-size and --image-channels skip it)"
                    : "",
                cfg_.cache ? ", decoding every image (--cache)" : "");
    std::fflush(stdout);
  }
  data_ = io::load_dataset(cfg_.dataset, cfg_.data_dir, cfg_.val_on_test ? 0.0 : cfg_.val_split,
                           cfg_.seed, cfg_.data_path, cfg_.cache, folder);
  if (main_)
    for (const auto& n : data_.notes) std::printf("%s\n", n.c_str());
  if (!cfg_.mean.empty()) {
    set_normalization(data_, cfg_.mean, cfg_.std);
    if (main_) {
      std::string given;
      for (size_t c = 0; c < cfg_.mean.size(); ++c) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%s%g/%g", c == 0 ? "" : ", ", cfg_.mean[c], cfg_.std[c]);
        given += buf;
      }
      std::printf("normalization (--mean/--std, per channel mean/std): %s\n", given.c_str());
    }
  }
  if (cfg_.val_on_test) {  // the whole training split trains; the test split validates
    if (data_.test.count == 0)
      throw std::invalid_argument("--val-on-test: the data set has no test split to validate on");
    data_.val = data_.test;
    if (main_)
      std::printf("--val-on-test: validating on the test split (%lld images); best.h5 and early "
                  "stopping then choose by the test set\n",
                  static_cast<long long>(data_.val.count));
  }
  if (main_)
    for (const auto& w : data_.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (cfg_.overfit_batches > 0) {  // the same first batches for training and validation
    const int64_t n = std::min(data_.train.count, cfg_.overfit_batches * cfg_.batch_size);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
    data_.train = io::subset(data_.train, idx);
    data_.val = data_.train;
  }
  if (!cfg_.class_weights.empty()) {
    const std::vector<double> w = class_weight_values(cfg_.class_weights, data_.train);
    double sum = 0;
    std::string shown;
    for (double x : w) {
      sum += x;
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.4g", shown.empty() ? "" : ", ", x);
      shown += buf;
    }
    const std::vector<float> wf(w.begin(), w.end());
    class_weights_.values = Tensor::from_vector(wf, {static_cast<int64_t>(wf.size())}).to(device_);
    class_weights_.sum = sum;
    if (main_)
      std::printf("class weights (%s): %s\n",
                  cfg_.class_weights == "balanced" ? "balanced" : "given", shown.c_str());
  }
  ModelSpec spec;
  spec.height = data_.train.height;
  spec.width = data_.train.width;
  spec.channels = data_.train.channels;
  spec.num_classes = data_.train.num_classes;
  spec.hidden = cfg_.hidden;
  spec.dropout = cfg_.dropout;
  spec.seed = cfg_.seed;
  model_ = make_model(cfg_.arch, spec);
  if (main_) {  // the summary's FLOPs: one sample on the host, in evaluation mode (no state moves)
    autograd::NoGradGuard no_grad;
    ModuleFlops::Recording recording(module_flops_);
    model_->eval();
    (*model_)(Variable(Tensor::zeros({1, spec.height, spec.width, spec.channels})));
    model_->train();
  }
  if (!cfg_.pretrained.empty()) {  // before the move: loads on the host
    std::set<std::string> skip;
    if (cfg_.reset_head)
      for (const auto& n : head_parameter_names(*model_)) skip.insert(n);
    load_weights(cfg_.pretrained, *model_, skip);
    if (main_)
      std::printf("initial weights from %s%s\n", cfg_.pretrained.c_str(),
                  cfg_.reset_head ? (" (" + head_prefix(*model_) + " re-initialised)").c_str() : "");
  }
  model_->to(device_);
  precision_ = parse_precision(cfg_.precision);
  model_->set_compute_dtype(compute_dtype(precision_));  // working copies for --precision 16/bf16
  if (!cfg_.freeze.empty()) {
    std::vector<std::string> modules;
    std::stringstream list(cfg_.freeze);
    for (std::string mod; std::getline(list, mod, ',');)
      if (!mod.empty()) modules.push_back(mod);
    frozen_ = freeze_modules(*model_, modules, !cfg_.freeze_bn);
    if (trainable_parameter_count(*model_) == 0)
      throw std::invalid_argument("--freeze " + cfg_.freeze + ": nothing is left to train");
    if (main_)
      std::printf("frozen: %s, %zu parameter tensor(s) that get no gradients%s\n",
                  cfg_.freeze.c_str(), frozen_.size(),
                  cfg_.freeze_bn ? " (batch norm included)" : "");
  } else if (cfg_.freeze_backbone || cfg_.unfreeze_backbone_at_epoch >= 0) {
    frozen_ = freeze_backbone(*model_, !cfg_.freeze_bn);
    if (main_)
      std::printf("backbone frozen: %zu parameter tensor(s) get no gradients%s; the head is %s\n",
                  frozen_.size(), cfg_.freeze_bn ? " (batch norm included)" : "",
                  head_prefix(*model_).c_str());
  }
  if (cfg_.activation_checkpointing) {
    const int blocks = enable_activation_checkpointing(*model_);
    if (blocks == 0)
      throw std::invalid_argument("--activation-checkpointing: --arch " + cfg_.arch +
                                  " has no residual blocks to checkpoint");
    if (main_)
      std::printf(
          "activation checkpointing: %d blocks keep only their inputs and run again in "
          "backward\n",
          blocks);
  }
  const int world = group_.world();
  if (cfg_.lr_scale == "linear") cfg_.lr *= world;  // the effective batch grew world-fold
  OptimizerConfig oc;
  oc.name = cfg_.optimizer;
  oc.lr = cfg_.lr;
  oc.momentum = cfg_.optimizer == "sgd" || cfg_.optimizer == "lars" ? cfg_.momentum : 0.0;
  oc.weight_decay = cfg_.weight_decay;
  oc.no_bias_decay = cfg_.no_bias_decay;
  oc.nesterov = cfg_.nesterov;
  oc.beta1 = cfg_.beta1;
  oc.beta2 = cfg_.beta2;
  oc.eps = cfg_.eps;
  oc.trust_coefficient = cfg_.trust_coefficient;
  oc.trust_clip = cfg_.trust_clip;
  if (cfg_.gradient_clip_algorithm == "value") oc.clip_value = cfg_.gradient_clip_val;
  // --strategy zero1/zero2: this rank's share of the state only, from the start
  // (ZeroRedundancy); under zero2 also its share of the gradients alone (the reducer's owners).
  // Hybrid sharding: partitioned within this rank's shard group (the same in every group).
  shard_size_ = cfg_.zero() ? resolve_shard_size(cfg_, group_) : group_.world();
  if (cfg_.zero() && group_.world() > 1) {
    oc.owned = owned_parameters(model_->named_parameters(), group_.rank() % shard_size_,
                                shard_size_);
    oc.sharded_gradients = cfg_.sharded_gradients();
  }
  opt_ = make_optimizer(model_->named_parameters(), oc);
  opt_->set_working(model_->working_parameters());
  // A weight average, under ZeRO sharded as the optimizer state: each rank averages the
  // parameters it owns (and every buffer), beside their state (and under zero3 the parameters).
  std::vector<bool> average_keep;
  if (!oc.owned.empty()) {
    std::set<std::string> others;
    const auto params = model_->named_parameters();
    for (size_t i = 0; i < params.size(); ++i)
      if (!oc.owned[i]) others.insert(params[i].first);
    for (const auto& [n, t] : model_->named_tensors()) average_keep.push_back(others.count(n) == 0);
  }
  if (cfg_.ema_decay > 0)
    ema_ = std::make_unique<WeightAverage>(*model_, cfg_.ema_decay, average_keep);
  if (cfg_.log_device_stats) device_stats_.emplace(device_);
  peak_flops_ =
      cfg_.peak_tflops > 0 ? cfg_.peak_tflops * 1e12
      : device_.is_cuda()
          ? peak_flops(tensor::cuda_device_name(device_.index),
                       peak_dtype(precision_name(precision_), cfg_.float32_matmul_precision))
          : 0;
  if (cfg_.swa_lrs > 0)  // (its decay is set per update)
    swa_ = std::make_unique<WeightAverage>(*model_, 0.5, average_keep);
  scaler_ = std::make_unique<GradScaler>(device_, precision_ == Precision::kFloat16);
  // --detect-anomaly: modules named as the summary names them. Under fp16 loss scaling an inf
  // gradient is expected now and then (the scaler skips that step), so only forward is checked.
  autograd::set_detect_anomaly(cfg_.detect_anomaly, cfg_.detect_anomaly && !scaler_->enabled());
  if (cfg_.detect_anomaly) {
    model_->label_for_trace();
    if (main_)
      std::printf("--detect-anomaly: checking every module's output%s for inf/nan (slow)\n",
                  scaler_->enabled() ? " (not the gradients: fp16 loss scaling handles inf ones)"
                                     : " and every backward op's gradients");
  }
  if (cfg_.cuda_graphs) {
    if (!device_.is_cuda())
      throw std::invalid_argument(
          "--cuda-graphs needs --device cuda (the CPU backend has no "
          "graphs), got --device " +
          cfg_.device);
    if (group_.world() > 1)
      throw std::invalid_argument(
          "--cuda-graphs runs one process alone for now: the data-parallel reducer's "
          "allreduces during backward are not captured (world size " +
          std::to_string(group_.world()) + "); drop --cuda-graphs under mpirun/srun");
    graphed_ = std::make_unique<GraphedStep>(*model_);
    opt_->set_capturable(true);  // the optimizer step is in the graph too
  }
  if (!cfg_.resume.empty()) {
    const Config saved = checkpoint_config(cfg_.resume);
    state_ = load_checkpoint(cfg_.resume, *model_, opt_.get(), scaler_->state());
    // A run with --ema-decay saved the average as its weights and the weights training goes on
    // with beside them: the average takes the first, the model the second. From a run without
    // it, both start from its weights (and the first update copies them).
    if (ema_) ema_->copy_from(*model_);
    const bool had_current = load_current_model(cfg_.resume, *model_);
    if (ema_) ema_->set_updates(had_current ? state_.ema_updates : 0);
    // --swa-lrs: the average so far (none before SWA began, or from a run without it).
    if (swa_) {
      const bool had_swa = load_group(cfg_.resume, "swa_average", swa_->named());
      swa_->set_updates(had_swa ? state_.swa_updates : 0);
      if (!had_swa) state_.swa_latest_epoch = -1;
    }
    if (had_current && !ema_ && main_)
      std::printf("note: %s holds a weight average (--ema-decay %g); without --ema-decay training "
                  "goes on from its current weights\n",
                  cfg_.resume.c_str(), checkpoint_config(cfg_.resume).ema_decay);
    model_->refresh_working_parameters();
    // --unfreeze-backbone-at-epoch: a run that had unfrozen its backbone has its group.
    if (opt_->group_count() > 1 && !frozen_.empty()) {
      make_trainable(*model_, frozen_);
      frozen_.clear();
    }
    // --lr-find: a resumed run keeps the rate its test found (the same command line is
    // submitted again under Slurm); without the flag, --lr applies, and that is said.
    if (saved.lr_find == "apply" && !cfg_.lr_find.empty()) {
      cfg_.lr = saved.lr;
      opt_->set_lr(cfg_.lr);
      lr_find_done_ = true;
      if (main_) std::printf("--lr-find: resumed, with the rate the run's test found: %g\n", cfg_.lr);
    } else if (saved.lr_find == "apply" && main_ && saved.lr != cfg_.lr) {
      std::printf("note: the run's rate came from --lr-find (%g); resumed with --lr %g\n",
                  saved.lr, cfg_.lr);
    }
    // --scale-batch-size: a resumed run keeps the size the run's search found (the checkpoint
    // records it as the run's --batch-size).
    if (!cfg_.scale_batch_size.empty()) {
      cfg_.batch_size = saved.batch_size;
      batch_size_found_ = true;
      if (main_)
        std::printf("--scale-batch-size: resumed, with the run's batch size %lld\n",
                    static_cast<long long>(cfg_.batch_size));
    }
    if (saved.checkpoint_monitor != cfg_.checkpoint_monitor) {  // another yardstick: start over
      state_.best_score = std::numeric_limits<double>::quiet_NaN();
      state_.top_k.clear();
      if (main_)
        std::printf("--checkpoint-monitor %s (the run monitored %s): best.h5 starts afresh\n",
                    cfg_.checkpoint_monitor.c_str(), saved.checkpoint_monitor.c_str());
    }
    // The position within the epoch as samples of its order: a run on another number of ranks,
    // batch size or accumulation count continues from the same sample, and its schedule (in
    // optimizer steps) from the same point of training (fit()). An older checkpoint's position
    // counts its own batches, on as many ranks as this run has (it did not record its own).
    const int64_t saved_world = state_.world > 0 ? state_.world : world;
    if (state_.epoch_samples < 0)
      state_.epoch_samples = state_.next_batch * saved.batch_size * saved_world;
    const int64_t saved_accum = accumulation_at(saved, state_.epoch);  // (the epoch resumed)
    if (saved_world != world || saved.batch_size != cfg_.batch_size ||
        saved_accum != accumulation_at(cfg_, state_.epoch))
      resumed_geometry_ = {saved_world, saved.batch_size, saved_accum};
    if (main_)
      std::printf("resumed from %s at epoch %lld, batch %lld (step %lld)\n", cfg_.resume.c_str(),
                  static_cast<long long>(state_.epoch + 1),
                  static_cast<long long>(state_.next_batch),
                  static_cast<long long>(state_.global_step));
  }
  if (world > 1 && !cfg_.scale_batch_size.empty())
    throw std::invalid_argument(
        "--scale-batch-size runs on one process only (as Lightning's batch size finder): find "
        "the size in a one-GPU run, then pass it as --batch-size to the data-parallel one");
  state_.world = world;  // what checkpoints record
  if (world == 1 && cfg_.zero() && main_)
    std::printf("note: --strategy %s on one process: nothing to shard, it trains as without\n",
                cfg_.strategy.c_str());
  if (world > 1) setup_data_parallel();
}

// The training loader's options: the batch, the workers, the device and dtype, this rank's
// shard, and the training augmentation (--augment, --auto-augment, --random-erasing).
io::LoaderOptions Trainer::train_loader_options() const {
  io::LoaderOptions lo;
  lo.batch_size = cfg_.batch_size;
  lo.shuffle = cfg_.overfit_batches == 0;
  lo.seed = cfg_.seed;
  lo.workers = cfg_.workers;
  lo.prefetch = cfg_.prefetch;
  lo.device = device_;
  lo.dtype = compute_dtype(precision_);
  lo.rank = group_.rank();
  lo.world = group_.world();
  // Training augmentation: random 4-pixel-padded crops and flips for CIFAR and STL-10 by default
  // (evaluation only normalizes).
  const bool crop_flip =
      cfg_.augment == "crop-flip" ||
      (cfg_.augment == "auto" &&
       (cfg_.dataset == "cifar10" || cfg_.dataset == "cifar100" || cfg_.dataset == "stl10"));
  lo.augment_pad = crop_flip ? 4 : 0;
  lo.augment_flip = crop_flip || cfg_.augment == "rrc-flip";
  // RandomResizedCrop (torchvision's ImageNet-style augmentation) at the image's own size.
  lo.augment_resized_crop = cfg_.augment == "rrc" || cfg_.augment == "rrc-flip";
  lo.rrc_scale[0] = cfg_.rrc_scale[0];
  lo.rrc_scale[1] = cfg_.rrc_scale[1];
  lo.rrc_ratio[0] = cfg_.rrc_ratio[0];
  lo.rrc_ratio[1] = cfg_.rrc_ratio[1];
  // torchvision's automatic augmentation on the crop: grayscale or RGB images, as torchvision's.
  lo.auto_augment = auto_augment_policy(cfg_.auto_augment);
  if (lo.auto_augment != kernels::AutoAugmentPolicy::kNone && data_.train.channels != 1 &&
      data_.train.channels != 3)
    throw std::invalid_argument("--auto-augment " + cfg_.auto_augment +
                                " needs images of 1 or 3 channels; these have " +
                                std::to_string(data_.train.channels));
  lo.ra_num_ops = cfg_.ra_num_ops;
  lo.ra_magnitude = cfg_.ra_magnitude;
  lo.augmix_severity = cfg_.augmix_severity;
  // torchvision's RandomErasing, after any of them.
  lo.erase_p = cfg_.random_erasing;
  lo.erase_scale[0] = cfg_.erasing_scale[0];
  lo.erase_scale[1] = cfg_.erasing_scale[1];
  lo.erase_ratio[0] = cfg_.erasing_ratio[0];
  lo.erase_ratio[1] = cfg_.erasing_ratio[1];
  return lo;
}

Trainer::~Trainer() {
  if (cfg_.detect_anomaly) autograd::set_detect_anomaly(false, false);  // (process-wide)
}

}  // namespace mlai::nn
