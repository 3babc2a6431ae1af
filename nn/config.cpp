// Config validation and JSON.
#include "nn/config.h"

#include <filesystem>

#include <cmath>
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "io/image_folder.h"
#include "nn/amp.h"
#include "nn/checkpoint_shards.h"
#include "nn/lr_schedule.h"
#include "nn/models.h"

namespace mlai::nn {

namespace {
void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}
}  // namespace

void Config::validate() const {
  require(epochs >= 1 || (epochs == -1 && max_steps >= 1),
          "--epochs must be >= 1 (or -1 with --max-steps: as many as the steps need), got " +
              std::to_string(epochs));
  require(max_steps == -1 || max_steps >= 1,
          "--max-steps must be -1 (no limit) or >= 1, got " + std::to_string(max_steps));
  if (!max_time.empty()) parse_duration(max_time, "--max-time");
  if (!checkpoint_train_time_interval.empty())
    parse_duration(checkpoint_train_time_interval, "--checkpoint-train-time-interval");
  require(lr_find.empty() || lr_find == "apply" || lr_find == "only",
          "--lr-find '" + lr_find + "' is unknown (expected apply, or only: test without training)");
  require(lr_find != "only" || resume.empty(),
          "--lr-find only and --resume cannot be combined (the test is for a run's start)");
  require(lr_find.empty() || fast_dev_run == 0, "--lr-find and --fast-dev-run cannot be combined");
  require(scale_batch_size.empty() || scale_batch_size == "power" || scale_batch_size == "binsearch",
          "--scale-batch-size '" + scale_batch_size + "' is unknown (expected power or binsearch)");
  require(scale_batch_size.empty() || fast_dev_run == 0,
          "--scale-batch-size and --fast-dev-run cannot be combined");
  // --test-only and --validate-only evaluate a checkpoint and train nothing.
  const std::string only = test_only ? "--test-only" : validate_only ? "--validate-only" : "";
  require(!(test_only && validate_only), "--test-only and --validate-only cannot be combined");
  require(scale_batch_size.empty() || only.empty(),
          only + " and --scale-batch-size cannot be combined (nothing trains)");
  require(batch_size >= 1, "--batch-size must be >= 1, got " + std::to_string(batch_size));
  require(lr > 0 && std::isfinite(lr), "--lr must be a positive number");
  require(workers >= 0 && workers <= 256, "--workers must be in [0, 256]");
  require(prefetch >= 1 && prefetch <= 1024, "--prefetch must be in [1, 1024]");
  require(val_split >= 0 && val_split < 1, "--val-split must be in [0, 1)");
  require(!(val_on_test && overfit_batches > 0),
          "--val-on-test and --overfit-batches cannot be combined (overfitting validates on the "
          "training batches)");
  require(label_smoothing >= 0 && label_smoothing <= 1, "--label-smoothing must be in [0, 1]");
  if (!class_weights.empty() && class_weights != "balanced") parse_class_weights(class_weights);
  require(class_weights.empty() || (mixup_alpha == 0 && cutmix_alpha == 0),
          "--class-weights cannot be combined with --mixup-alpha or --cutmix-alpha (the mixed "
          "targets' loss has no class weights)");
  require(dropout >= 0 && dropout < 1, "--dropout must be in [0, 1)");
  require(!(cuda_graphs && detect_anomaly),
          "--detect-anomaly reads every module's output on the host, which a CUDA graph's "
          "capture cannot; drop --cuda-graphs while looking for the nan");
  require(!cuda_graphs || dropout == 0,
          "--cuda-graphs with --dropout > 0: the captured step would replay one dropout mask "
          "every step (the random offsets are fixed at capture); drop one of the two (the "
          "mobilenets' classifier has torchvision's 0.2 unless --dropout 0)");
  require(accumulate_grad_batches >= 1 && accumulate_grad_batches <= 1 << 20,
          "--accumulate-grad-batches must be in [1, 2^20], got " +
              std::to_string(accumulate_grad_batches));
  if (!accumulation_schedule.empty()) {
    parse_accumulation_schedule(accumulation_schedule);  // (throws naming the flag)
    require(accumulate_grad_batches == 1,
            "--accumulation-schedule with --accumulate-grad-batches " +
                std::to_string(accumulate_grad_batches) +
                ": the schedule gives every epoch's count (Lightning refuses both too); drop one");
  }
  require(!cuda_graphs || !accumulates(*this),
          "--cuda-graphs with --accumulate-grad-batches > 1 (or an --accumulation-schedule "
          "above 1): the captured step zeroes the gradients each time, so nothing would "
          "accumulate; drop one of the two");
  require(log_every_n_steps >= 0, "--log-every-n-steps must be >= 0 (0: off)");
  require(peak_tflops >= 0 && std::isfinite(peak_tflops),
          "--peak-tflops must be a finite number >= 0 (0: the built-in table's figure)");
  require(num_sanity_val_steps >= -1,
          "--num-sanity-val-steps must be -1 (all validation batches), 0 (off) or a count, got " +
              std::to_string(num_sanity_val_steps));
  require(weight_decay >= 0, "--weight-decay must be >= 0");
  require(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1)");
  auto one_of = [](const std::string& v, const std::vector<std::string>& choices,
                   const std::string& flag) {
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return;
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    throw std::invalid_argument(flag + " '" + v + "' is unknown (expected " + list + ")");
  };
  one_of(optimizer, {"sgd", "adam", "adamw", "lars", "lamb"}, "--optimizer");
  require(trust_coefficient > 0 && std::isfinite(trust_coefficient),
          "--trust-coefficient must be > 0, got " + std::to_string(trust_coefficient));
  require(!(trust_clip && optimizer != "lars" && optimizer != "lamb"),
          "--trust-clip applies to --optimizer lars or lamb only");
  one_of(arch, model_names(), "--arch");
  one_of(dataset, io::dataset_names(), "--dataset");
  require(!(dataset == "hdf5" && data_path.empty()),
          "--dataset hdf5 needs --data-path FILE.h5 (or TRAIN.h5,TEST.h5)");
  require(!(dataset != "hdf5" && !data_path.empty()),
          "--data-path applies to --dataset hdf5 only (use --data-dir)");
  require(!(dataset == "hdf5" && !data_dir.empty()),
          "--data-dir does not apply to --dataset hdf5 (use --data-path)");
  require(!(dataset == "folder" && data_dir.empty()),
          "--dataset folder needs --data-dir DIR (DIR/<class>/*.png|jpg, or DIR/train/<class>/... "
          "beside DIR/test or DIR/val)");
  require(dataset == "folder" || (image_size.empty() && image_channels == 0),
          "--image-size and --image-channels apply to --dataset folder only (mlai_convert --from "
          "folder --size packs images at a size)");
  if (!image_size.empty()) io::parse_image_size(image_size, "--image-size");
  require(image_channels == 0 || image_channels == 1 || image_channels == 3,
          "--image-channels must be 1 or 3, got " + std::to_string(image_channels));
  require(mean.empty() == std.empty(), "--mean and --std go together (one value per channel each)");
  require(mean.size() == std.size(),
          "--mean has " + std::to_string(mean.size()) + " values but --std has " +
              std::to_string(std.size()) + " (one per channel each)");
  for (double s : std) require(s > 0 && std::isfinite(s), "--std values must be > 0");
  for (double m : mean) require(std::isfinite(m), "--mean values must be finite numbers");
  one_of(lr_schedule,
         {"constant", "step", "multistep", "exponential", "cosine", "cosine_restarts",
          "warmup_cosine", "onecycle", "linear", "polynomial", "plateau"},
         "--lr-schedule");
  require(lr_power > 0 && std::isfinite(lr_power), "--lr-power must be > 0");
  require(lr_restart_epochs >= 1, "--lr-restart-epochs must be >= 1 (epochs of the first cycle)");
  require(lr_restart_mult >= 1, "--lr-restart-mult must be >= 1");
  one_of(plateau_monitor, {"val_loss", "val_accuracy"}, "--plateau-monitor");
  require(plateau_patience >= 0, "--plateau-patience must be >= 0");
  require(plateau_threshold >= 0, "--plateau-threshold must be >= 0");
  require(plateau_cooldown >= 0, "--plateau-cooldown must be >= 0");
  require(ema_decay >= 0 && ema_decay < 1,
          "--ema-decay must be in [0, 1) (0: off; 0.999 is usual), got " + std::to_string(ema_decay));
  require(ema_start_step >= 0, "--ema-start-step must be >= 0");
  require(swa_lrs >= 0, "--swa-lrs must be >= 0 (0: off)");
  require(annealing_epochs >= 0, "--annealing-epochs must be >= 0");
  one_of(annealing_strategy, {"cos", "linear"}, "--annealing-strategy");
  if (swa_lrs > 0) {
    require(epochs > 0, "--swa-lrs needs --epochs (the averaging ends with the last epoch)");
    require(swa_start_epoch(*this) < epochs,
            "--swa-epoch-start " + swa_epoch_start + " starts after the last of --epochs " +
                std::to_string(epochs));
    require(ema_decay == 0, "--swa-lrs and --ema-decay cannot be combined (one weight average)");
    require(lr_schedule != "plateau", "--swa-lrs replaces the schedule from its start epoch; "
                                      "it cannot follow --lr-schedule plateau");
  }
  require(mixup_alpha >= 0, "--mixup-alpha must be >= 0 (0: off)");
  require(cutmix_alpha >= 0, "--cutmix-alpha must be >= 0 (0: off)");
  require(!(cuda_graphs && (mixup_alpha > 0 || cutmix_alpha > 0)),
          "--cuda-graphs cannot be combined with --mixup-alpha or --cutmix-alpha: the mixing "
          "weight changes every step, and a graph replays one");
  require(lr_schedule != "plateau" || (lr_gamma > 0 && lr_gamma < 1),
          "--lr-schedule plateau: --lr-gamma (the factor) must be in (0, 1)");
  require(lr_schedule != "plateau" || val_split > 0 || overfit_batches > 0 || val_on_test,
          "--lr-schedule plateau needs a validation set (--val-split > 0) to monitor");
  one_of(dist_backend, {"auto", "nccl", "mpi"}, "--dist-backend");
  one_of(lr_scale, {"none", "linear"}, "--lr-scale");
  one_of(strategy, {"ddp", "zero1", "zero2", "zero3", "hybrid_shard"}, "--strategy");
  require(shard_size == "auto" || shard_size == "world" || shard_size == "node" ||
              (!shard_size.empty() && shard_size.size() < 7 &&
               shard_size.find_first_not_of("0123456789") == std::string::npos &&
               std::stoll(shard_size) > 0),
          "--shard-size must be auto, world, node or a number of ranks > 0 (got '" + shard_size +
              "')");
  require(shard_size == "auto" || zero(),
          "--shard-size shards the model over groups of ranks: it needs --strategy zero1, zero2, "
          "zero3 or hybrid_shard (got --strategy " + strategy + ")");
  require(!sharded_gradients() || ddp_comm_hook == "none",
          "--strategy " + strategy +
              " reduces each gradient to the rank that owns it; --ddp-comm-hook " + ddp_comm_hook +
              " compresses DDP's allreduce (use --strategy ddp or zero1 with it)");
  one_of(state_dict_type, {"full", "sharded"}, "--state-dict-type");
  require(state_dict_type == "full" || zero(),
          "--state-dict-type sharded writes each rank's share of a sharded state; under --strategy " +
              strategy + " every rank holds all of it (use zero1, zero2, zero3/fsdp or hybrid_shard)");
  one_of(backward_prefetch, {"backward_pre", "backward_post", "none"}, "--backward-prefetch");
  require((backward_prefetch == "backward_pre" && !forward_prefetch) || zero_stage() == 3,
          std::string(forward_prefetch ? "--forward-prefetch" : "--backward-prefetch") +
              " orders the gathers of --strategy zero3's units; --strategy " + strategy +
              " gathers none");
  one_of(augment, {"auto", "none", "crop-flip", "rrc", "rrc-flip"}, "--augment");
  require(rrc_scale.size() == 2 && rrc_scale[0] > 0 && rrc_scale[0] <= rrc_scale[1] &&
              rrc_scale[1] <= 1,
          "--rrc-scale must be two shares of the area, 0 < MIN <= MAX <= 1 (like 0.08,1)");
  require(rrc_ratio.size() == 2 && rrc_ratio[0] > 0 && rrc_ratio[0] <= rrc_ratio[1],
          "--rrc-ratio must be two aspect ratios, 0 < MIN <= MAX (like 0.75,1.3333)");
  one_of(auto_augment, {"none", "ta_wide", "ra", "augmix", "imagenet", "cifar10", "svhn"},
         "--auto-augment");
  require(augmix_severity >= 1 && augmix_severity <= 10,
          "--augmix-severity must be in [1, 10] (AugMix's severity; default 3)");
  require(ra_num_ops >= 1 && ra_num_ops <= 4,
          "--ra-num-ops must be in [1, 4] (RandAugment's operations per image; default 2)");
  require(ra_magnitude >= 0 && ra_magnitude <= 30,
          "--ra-magnitude must be a bin in [0, 30] (RandAugment's 31 bins; default 9)");
  require(random_erasing >= 0 && random_erasing <= 1,
          "--random-erasing must be a probability in [0, 1] (0: off; torchvision's default 0.5)");
  require(erasing_scale.size() == 2 && erasing_scale[0] > 0 &&
              erasing_scale[0] <= erasing_scale[1] && erasing_scale[1] < 1,
          "--erasing-scale must be two shares of the area, 0 < MIN <= MAX < 1 (like 0.02,0.33)");
  require(
      erasing_ratio.size() == 2 && erasing_ratio[0] > 0 && erasing_ratio[0] <= erasing_ratio[1],
      "--erasing-ratio must be two aspect ratios (height/width), 0 < MIN <= MAX (like 0.3,3.3)");
  require(devices >= 0, "--devices must be >= 0 (the processes to start; 0: as launched)");
  require(bucket_cap_mb > 0, "--bucket-cap-mb must be > 0");
  parse_ddp_comm_hook(ddp_comm_hook);
  require(powersgd_rank >= 1 && powersgd_rank <= 64,
          "--powersgd-rank must be in [1, 64] (the factors' columns), got " +
              std::to_string(powersgd_rank));
  require(powersgd_start_iter >= 0, "--powersgd-start-iter must be >= 0 (optimizer steps)");
  require(dist_timeout >= 0, "--dist-timeout must be >= 0 seconds (0: no deadline)");
  require(criterion == "cross_entropy" || criterion == "nll",
          "--criterion must be cross_entropy or nll, got '" + criterion + "'");
  parse_precision(precision);  // throws naming --precision and the choices
  parse_matmul_precision(float32_matmul_precision);
  require(limit_batches(limit_train_batches, 1000000, "--limit-train-batches") > 0,
          "--limit-train-batches must leave at least one batch");
  limit_batches(limit_val_batches, 1000000, "--limit-val-batches");
  limit_batches(limit_test_batches, 1000000, "--limit-test-batches");
  require(limit_batches(val_check_interval, 1000000, "--val-check-interval") > 0,
          "--val-check-interval must be a fraction in (0, 1] or at least 1 batch");
  require(check_val_every_n_epoch >= 1, "--check-val-every-n-epoch must be >= 1");
  require(fast_dev_run >= 0, "--fast-dev-run must be >= 0");
  require(overfit_batches >= 0, "--overfit-batches must be >= 0");
  require(!(overfit_batches > 0 && fast_dev_run > 0),
          "--overfit-batches and --fast-dev-run cannot be combined");
  require(!(overfit_batches > 0 && limit_train_batches != "1.0"),
          "--overfit-batches and --limit-train-batches cannot be combined");
  require(checkpoint_every >= 0, "--checkpoint-every must be >= 0");
  one_of(checkpoint_monitor, {"val_accuracy", "val_loss"}, "--checkpoint-monitor");
  require(save_top_k >= -1, "--save-top-k must be >= -1 (-1: all, 0: none), got " +
                                std::to_string(save_top_k));
  require(test_ckpt == "last" || test_ckpt == "best" || checkpoint_exists(test_ckpt),
          "--test-ckpt must be last, best or a checkpoint file, got '" + test_ckpt +
              "' (no such file)");
  require(only.empty() || (test_ckpt != "last" && test_ckpt != "best"),
          only + " needs --test-ckpt FILE: the checkpoint whose weights to " +
              (test_only ? "test" : "validate"));
  require(only.empty() || resume.empty(), only + " and --resume cannot be combined");
  require(only.empty() || fast_dev_run == 0, only + " and --fast-dev-run cannot be combined");
  require(only.empty() || lr_find.empty(), only + " and --lr-find cannot be combined");
  require(!(test_ckpt == "best" && save_top_k == 0),
          "--test-ckpt best needs best.h5, which --save-top-k 0 does not write");
  require(log_images >= 0, "--log-images must be >= 0 (0: off)");
  parse_trace_steps(profiler_trace);
  require(lr_schedule != "multistep" || !lr_milestones.empty(),
          "--lr-schedule multistep needs --lr-milestones (the epochs to decay at, e.g. 30,60,80)");
  for (size_t i = 0; i < lr_milestones.size(); ++i)
    require(lr_milestones[i] >= 1 && (i == 0 || lr_milestones[i] > lr_milestones[i - 1]),
            "--lr-milestones must be increasing epochs >= 1, got " +
                std::to_string(lr_milestones[i]) + " at position " + std::to_string(i + 1));
  require(checkpoint_every_n_steps >= 0, "--checkpoint-every-n-steps must be >= 0 (0: off)");
  require(early_stopping_patience >= 0, "--early-stopping-patience must be >= 0");
  require(gradient_clip_val >= 0, "--gradient-clip-val must be >= 0 (0: no clipping)");
  one_of(gradient_clip_algorithm, {"norm", "value"}, "--gradient-clip-algorithm");
  one_of(early_stopping_monitor, {"val_loss", "val_accuracy"}, "--early-stopping-monitor");
  require(early_stopping_min_delta >= 0, "--early-stopping-min-delta must be >= 0");
  require(min_epochs >= 0, "--min-epochs must be >= 0, got " + std::to_string(min_epochs));
  require(min_steps >= 0, "--min-steps must be >= 0, got " + std::to_string(min_steps));
  require(epochs < 1 || min_epochs <= epochs, "--min-epochs " + std::to_string(min_epochs) +
                                                  " is more than --epochs " +
                                                  std::to_string(epochs));
  require(max_steps < 1 || min_steps <= max_steps, "--min-steps " + std::to_string(min_steps) +
                                                       " is more than --max-steps " +
                                                       std::to_string(max_steps));
  for (const auto& [flag, text] :
       {std::pair<const char*, const std::string*>{"--early-stopping-stopping-threshold",
                                                    &early_stopping_stopping_threshold},
        {"--early-stopping-divergence-threshold", &early_stopping_divergence_threshold}}) {
    if (text->empty()) continue;
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(*text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == text->size() && std::isfinite(v),
            std::string(flag) + " must be a number, got '" + *text + "'");
  }
  require(!early_stopping() || val_split > 0 || overfit_batches > 0 || val_on_test,
          "early stopping (--early-stopping-patience or a threshold) needs a validation set "
          "(--val-split > 0)");
  require(!(reset_head && pretrained.empty()), "--reset-head applies to --pretrained only");
  require(!(freeze_bn && !freeze_backbone && freeze.empty() && unfreeze_backbone_at_epoch < 0),
          "--freeze-bn applies with --freeze-backbone, --freeze or --unfreeze-backbone-at-epoch");
  require(!(freeze_backbone && !freeze.empty()),
          "--freeze-backbone and --freeze cannot be combined (the whole backbone, or the modules "
          "named)");
  require(unfreeze_backbone_at_epoch >= -1,
          "--unfreeze-backbone-at-epoch must be an epoch >= 0 (0-based; -1: never)");
  require(backbone_lr_ratio > 0, "--backbone-lr-ratio must be > 0");
  require(backbone_lr_growth > 0, "--backbone-lr-growth must be > 0");
  require(!(swa_lrs > 0 && unfreeze_backbone_at_epoch >= 0),
          "--swa-lrs cannot be combined with --unfreeze-backbone-at-epoch: SWALR would anneal "
          "the head's rate only, not the backbone's group");
  require(!(cuda_graphs && unfreeze_backbone_at_epoch >= 0),
          "--cuda-graphs cannot be combined with --unfreeze-backbone-at-epoch: the captured "
          "backward computes no gradient for the frozen backbone");
  require(!(fast_dev_run > 0 && !resume.empty()), "--fast-dev-run and --resume cannot be combined");
  require(!experiment_name.empty() && experiment_name.find('/') == std::string::npos,
          "--experiment-name must be a non-empty name without '/'");
  for (int64_t h : hidden) require(h >= 1, "--hidden widths must be >= 1");
  require(!(activation_checkpointing && cuda_graphs),
          "--activation-checkpointing cannot be combined with --cuda-graphs (the recomputation "
          "in backward is not captured)");
  require(!(nesterov && optimizer != "sgd" && optimizer != "lars"),
          "--nesterov applies to --optimizer sgd or lars only");
}

int64_t limit_batches(const std::string& limit, int64_t available, const std::string& flag) {
  size_t used = 0;
  try {
    if (limit.find_first_of(".eE") != std::string::npos) {
      const double f = std::stod(limit, &used);
      if (used == limit.size() && f >= 0 && f <= 1)
        return std::min<int64_t>(available, static_cast<int64_t>(f * static_cast<double>(available)));
    } else {
      const long long n = std::stoll(limit, &used);
      if (used == limit.size() && n >= 0) return std::min<int64_t>(available, n);
    }
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(flag + " must be a fraction in [0.0, 1.0] or a whole number of "
                              "batches, got '" + limit + "'");
}

kernels::MatmulPrecision parse_matmul_precision(const std::string& text) {
  if (text == "highest") return kernels::MatmulPrecision::kHighest;
  if (text == "high") return kernels::MatmulPrecision::kHigh;
  if (text == "medium") return kernels::MatmulPrecision::kMedium;
  throw std::invalid_argument("--float32-matmul-precision '" + text +
                              "' is unknown (expected highest, high: TF32, or medium: bf16)");
}

tensor::DType parse_ddp_comm_hook(const std::string& text) {
  if (text == "none" || text == "powersgd" || text == "powerSGD_hook")
    return tensor::DType::kFloat32;
  if (text == "fp16" || text == "fp16_compress_hook") return tensor::DType::kFloat16;
  if (text == "bf16" || text == "bf16_compress_hook") return tensor::DType::kBFloat16;
  throw std::invalid_argument("--ddp-comm-hook '" + text +
                              "' is unknown (expected none, fp16, bf16 or powersgd: PyTorch's "
                              "fp16_compress_hook, bf16_compress_hook, powerSGD_hook)");
}

kernels::AutoAugmentPolicy auto_augment_policy(const std::string& text) {
  using P = kernels::AutoAugmentPolicy;
  if (text == "none") return P::kNone;
  if (text == "ta_wide") return P::kTrivialAugmentWide;
  if (text == "ra") return P::kRandAugment;
  if (text == "imagenet") return P::kImageNet;
  if (text == "cifar10") return P::kCifar10;
  if (text == "svhn") return P::kSvhn;
  if (text == "augmix") return P::kAugMix;
  throw std::invalid_argument(
      "--auto-augment '" + text +
      "' is unknown (expected none, ta_wide, ra, augmix, imagenet, cifar10 or svhn)");
}

double parse_duration(const std::string& text, const std::string& flag) {
  const auto bad = [&]() {
    return std::invalid_argument(
        flag + " must be a duration: DD:HH:MM:SS (Lightning's max_time) or a Slurm time (MM, "
               "MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS), got '" + text + "'");
  };
  auto number = [&](const std::string& f) {
    if (f.empty() || f.size() > 9 || f.find_first_not_of("0123456789.") != std::string::npos ||
        f.find('.') != f.rfind('.') || f == ".")
      throw bad();
    return std::stod(f);
  };
  std::string rest = text;
  double days = 0;
  const size_t dash = text.find('-');
  if (dash != std::string::npos) {
    days = number(text.substr(0, dash));
    rest = text.substr(dash + 1);
  }
  std::vector<double> f;
  for (size_t b = 0;;) {
    const size_t e = rest.find(':', b);
    f.push_back(number(rest.substr(b, e == std::string::npos ? std::string::npos : e - b)));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  double seconds = 0;
  if (dash != std::string::npos) {  // D-HH, D-HH:MM, D-HH:MM:SS
    if (f.size() > 3) throw bad();
    seconds = days * 86400 + f[0] * 3600 + (f.size() > 1 ? f[1] * 60 : 0) + (f.size() > 2 ? f[2] : 0);
  } else if (f.size() == 1) {  // Slurm's bare number: minutes
    seconds = f[0] * 60;
  } else if (f.size() == 2) {  // MM:SS
    seconds = f[0] * 60 + f[1];
  } else if (f.size() == 3) {  // HH:MM:SS
    seconds = f[0] * 3600 + f[1] * 60 + f[2];
  } else if (f.size() == 4) {  // Lightning's DD:HH:MM:SS
    seconds = f[0] * 86400 + f[1] * 3600 + f[2] * 60 + f[3];
  } else {
    throw bad();
  }
  if (seconds <= 0) throw std::invalid_argument(flag + " must be longer than 0, got '" + text + "'");
  return seconds;
}

// One line per group of settings, as they were added:
// clang-format off
#define MLAI_CONFIG_FIELDS(X)                                                                   \
  X(arch) X(hidden) X(dropout) X(dataset) X(data_dir) X(val_split) X(val_on_test) X(workers) X(criterion)     \
  X(label_smoothing) X(class_weights) X(optimizer) X(lr) X(momentum) X(weight_decay) X(nesterov) X(beta1)        \
  X(beta2) X(eps) X(trust_coefficient) X(trust_clip) X(lr_schedule) X(lr_step_epochs) X(lr_milestones) X(lr_gamma) X(lr_power) X(lr_restart_epochs) X(lr_restart_mult) X(warmup_steps) X(min_lr)       \
  X(epochs) X(batch_size) X(seed) X(device) X(precision) X(float32_matmul_precision) X(deterministic) X(cudnn_benchmark) X(cuda_graphs) X(fast_dev_run)      \
  X(limit_train_batches) X(limit_val_batches) X(num_sanity_val_steps) X(limit_test_batches) X(overfit_batches) X(val_check_interval) X(check_val_every_n_epoch) X(log_dir) X(experiment_name) \
  X(checkpoint_every) X(checkpoint_every_n_steps) X(checkpoint_train_time_interval) X(resume) X(progress) X(dist_backend) X(bucket_cap_mb) X(overlap) X(ddp_comm_hook) X(powersgd_rank) X(powersgd_start_iter)         \
  X(lr_scale) X(strategy) X(shard_size) X(backward_prefetch) X(forward_prefetch) X(state_dict_type) X(async_checkpoint) X(save_weights_only) X(sync_bn) X(activation_checkpointing) X(dist_timeout) X(devices) X(augment) X(prefetch) X(data_path) X(cache) X(image_size) X(image_channels) X(mean) X(std) \
  X(pretrained) X(reset_head) X(early_stopping_patience) X(early_stopping_monitor)           \
  X(early_stopping_min_delta) X(early_stopping_stopping_threshold) \
  X(early_stopping_divergence_threshold) X(min_epochs) X(min_steps) X(gradient_clip_val) X(gradient_clip_algorithm) X(accumulate_grad_batches) X(accumulation_schedule) \
  X(log_every_n_steps) X(max_steps) X(max_time) X(checkpoint_monitor) X(save_top_k) X(lr_find) X(scale_batch_size) \
  X(test_ckpt) X(plateau_monitor) X(plateau_patience) X(plateau_threshold) X(plateau_cooldown) \
  X(ema_decay) X(ema_start_step) X(test_only) X(validate_only) X(mixup_alpha) X(cutmix_alpha) \
  X(rrc_scale) X(rrc_ratio) X(auto_augment) X(ra_num_ops) X(ra_magnitude) X(augmix_severity) X(random_erasing) X(erasing_scale) X(erasing_ratio) X(log_grad_norm) X(log_histograms) X(log_images) X(log_per_class) X(log_device_stats) X(peak_tflops) X(detect_anomaly) X(no_bias_decay) \
  X(profiler_trace) \
  X(swa_lrs) X(swa_epoch_start) X(annealing_epochs) X(annealing_strategy) \
  X(freeze_backbone) X(freeze) X(freeze_bn) X(unfreeze_backbone_at_epoch) X(backbone_lr_ratio) \
  X(backbone_lr_growth)
// clang-format on

std::vector<double> parse_class_weights(const std::string& text) {
  std::vector<double> out;
  size_t start = 0;
  bool positive = false;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || !std::isfinite(v) || v < 0)
      throw std::invalid_argument("--class-weights: '" + item +
                                  "' is not a weight >= 0 (give balanced, or W0,W1,... one per "
                                  "class)");
    positive = positive || v > 0;
    out.push_back(v);
    start = comma + 1;
  }
  if (!positive) throw std::invalid_argument("--class-weights: every weight is 0");
  return out;
}

nlohmann::json to_json(const Config& c) {
  nlohmann::json j;
#define MLAI_TO(f) j[#f] = c.f;
  MLAI_CONFIG_FIELDS(MLAI_TO)
#undef MLAI_TO
  return j;
}

std::pair<int64_t, int64_t> parse_trace_steps(const std::string& text) {
  if (text.empty()) return {-1, -1};
  const size_t colon = text.find(':');
  try {
    if (colon != std::string::npos) {
      size_t u1 = 0, u2 = 0;
      const std::string a = text.substr(0, colon), b = text.substr(colon + 1);
      const long long start = std::stoll(a, &u1), end = std::stoll(b, &u2);
      if (u1 == a.size() && u2 == b.size() && start >= 0 && end > start) return {start, end};
    }
  } catch (const std::exception&) {
  }
  throw std::invalid_argument("--profiler-trace must be START:END, optimizer steps with 0 <= "
                              "START < END (e.g. 10:15), got '" + text + "'");
}

int64_t swa_start_epoch(const Config& c) {
  const std::string& s = c.swa_epoch_start;
  size_t used = 0;
  try {
    if (s.find_first_of(".eE") != std::string::npos) {
      const double f = std::stod(s, &used);
      if (used == s.size() && f >= 0 && f <= 1)
        return std::max<int64_t>(static_cast<int64_t>(static_cast<double>(c.epochs) * f) - 1, 0);
    } else {
      const long long n = std::stoll(s, &used);
      if (used == s.size() && n >= 1) return n - 1;
    }
  } catch (const std::exception&) {
  }
  throw std::invalid_argument("--swa-epoch-start must be a fraction of --epochs in [0.0, 1.0] or "
                              "an epoch number >= 1, got '" + s + "'");
}

void take_model_and_data_settings(Config& c, const Config& from, const std::set<std::string>& given) {
  const nlohmann::json src = to_json(from);
  nlohmann::json dst = to_json(c);
  // What builds the same model and reads the same data the same way; the schedule, logging and
  // checkpoint settings of the run do not matter to a test.
  for (const char* key : {"arch", "hidden", "dataset", "data_dir", "data_path", "cache",
                          "image_size", "image_channels", "mean", "std", "val_split", "val_on_test",
                          "seed", "batch_size", "precision", "criterion", "label_smoothing",
                          "class_weights"})
    if (!given.count(key)) dst[key] = src.at(key);
  const bool test = c.test_only, validate = c.validate_only;
  const std::string ckpt = c.test_ckpt;
  c = config_from_json(dst);
  c.test_only = test;
  c.validate_only = validate;
  c.test_ckpt = ckpt;
}

std::vector<std::pair<int64_t, int64_t>> parse_accumulation_schedule(const std::string& text) {
  std::vector<std::pair<int64_t, int64_t>> out;
  auto bad = [&](const std::string& why) {
    return std::invalid_argument("--accumulation-schedule '" + text + "': " + why +
                                 " (expected EPOCH:COUNT,... with epochs from 0 up, as "
                                 "0:8,4:4,8:1)");
  };
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const size_t colon = item.find(':');
    size_t used_e = 0, used_n = 0;
    long long e = -1, n = 0;
    if (colon == std::string::npos) throw bad("'" + item + "' has no ':'");
    try {
      e = std::stoll(item.substr(0, colon), &used_e);
      n = std::stoll(item.substr(colon + 1), &used_n);
    } catch (const std::exception&) {  // (not a number, or out of range)
      throw bad("'" + item + "' is not two whole numbers");
    }
    if (used_e != colon || used_n != item.size() - colon - 1)
      throw bad("'" + item + "' is not two whole numbers");
    if (e < 0 || (!out.empty() && e <= out.back().first))
      throw bad("the epochs must be >= 0 and increasing");
    if (n < 1 || n > (1 << 20)) throw bad("each count must be in [1, 2^20]");
    out.emplace_back(e, n);
    start = comma + 1;
  }
  return out;
}

int64_t accumulation_at(const Config& c, int64_t epoch) {
  if (c.accumulation_schedule.empty()) return c.accumulate_grad_batches;
  int64_t n = 1;
  for (const auto& [e, count] : parse_accumulation_schedule(c.accumulation_schedule))
    if (e <= epoch) n = count;
  return n;
}

bool accumulates(const Config& c) {
  if (c.accumulation_schedule.empty()) return c.accumulate_grad_batches > 1;
  for (const auto& [e, count] : parse_accumulation_schedule(c.accumulation_schedule))
    if (count > 1) return true;
  return false;
}

Config config_from_json(const nlohmann::json& j) {
  Config c;
#define MLAI_FROM(f) \
  if (j.contains(#f)) j.at(#f).get_to(c.f);
  MLAI_CONFIG_FIELDS(MLAI_FROM)
#undef MLAI_FROM
  return c;
}

}  // namespace mlai::nn
