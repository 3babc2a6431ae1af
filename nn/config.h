// Every setting of a training run (what mlai_train's flags fill in), with JSON round-tripping
// for hparams.json and checkpoints, and validation of impossible combinations.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kernels/auto_augment.h"
#include "kernels/gemm.h"
#include "tensor/dtype.h"

namespace mlai::nn {

struct Config {
  // model
  std::string arch = "mlp";
  std::vector<int64_t> hidden;  // mlp widths; empty: the model's default
  double dropout = 0.0;
  // data
  std::string dataset = "fashion-mnist";
  std::string data_dir;   // empty: the dataset's default
  std::string data_path;  // hdf5: TRAIN.h5 or TRAIN.h5,TEST.h5 (io::hdf5_paths)
  bool cache = false;  // hdf5, folder: read (decode) every image into memory once (else stream)
  // folder: every image resized to "HxW" or "N" (PIL's bilinear, as torchvision's Resize);
  // empty: the size they all share. Channels 1 or 3; 0: 3 if any image is in colour, else 1.
  std::string image_size;
  int image_channels = 0;
  // Per-channel normalization on the [0, 1] scale instead of the data set's own statistics
  // (transforms.Normalize(mean, std): ImageNet's for a torchvision-pretrained backbone).
  std::vector<double> mean, std;
  double val_split = 0.1;
  // Validate on the data set's test split, training on the whole training split (val_split
  // unused), as Lightning's CIFAR-10 tutorials pass the test loader as val_dataloaders.
  bool val_on_test = false;
  int workers = 2;
  int prefetch = 4;              // batches the workers may prepare ahead of the trainer
  std::string augment = "auto";  // auto (crop-flip for cifar10/100), none, crop-flip, rrc, rrc-flip
  // rrc, rrc-flip: torchvision's RandomResizedCrop(scale, ratio) at the image's own size.
  std::vector<double> rrc_scale{0.08, 1.0};
  // torchvision's RandomErasing(p, scale, ratio, value=0) on training images after the
  // normalization (0: off)
  double random_erasing = 0;
  std::vector<double> erasing_scale{0.02, 0.33};
  std::vector<double> erasing_ratio{0.3, 3.3};
  std::vector<double> rrc_ratio{3.0 / 4.0, 4.0 / 3.0};
  // torchvision's automatic augmentation on the uint8 crop, before the normalization: none,
  // ta_wide (TrivialAugmentWide), ra (RandAugment(ra_num_ops, ra_magnitude)), or AutoAugment's
  // imagenet, cifar10 or svhn policy, or augmix (AugMix(augmix_severity)): the names of
  // torchvision's reference --auto-augment.
  std::string auto_augment = "none";
  int ra_num_ops = 2;
  int ra_magnitude = 9;
  int augmix_severity = 3;
  // loss and optimisation
  std::string criterion = "cross_entropy";
  double label_smoothing = 0.0;
  // PyTorch's CrossEntropyLoss(weight=...): "" (none), "balanced" (n / (classes x count_c)
  // over the training split, sklearn's), or one weight per class, "W0,W1,...".
  std::string class_weights;
  std::string optimizer = "adam";
  double lr = 1e-3;
  double momentum = 0.9;  // sgd and lars
  double weight_decay = 0.0;
  bool no_bias_decay = false;  // weight decay on weight matrices and filters only
  // torch.utils.checkpoint around each residual block (nn/activation_checkpointing.h).
  bool activation_checkpointing = false;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double trust_coefficient = 0.001;  // lars
  bool trust_clip = false;           // lars (LARC) and lamb
  std::string lr_schedule = "cosine";
  int64_t lr_step_epochs = 30;
  // lr_schedule "multistep": PyTorch MultiStepLR's milestones, epochs counted from 0 (the rate
  // is multiplied by lr_gamma when that many epochs are done).
  std::vector<int64_t> lr_milestones;
  double lr_gamma = 0.1;
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  double lr_power = 1.0;  // polynomial: the decay's exponent (PyTorch's PolynomialLR power)
  // cosine_restarts: CosineAnnealingWarmRestarts's T_0 (epochs) and T_mult.
  int64_t lr_restart_epochs = 10;
  int64_t lr_restart_mult = 1;
  // lr_schedule "plateau": PyTorch's ReduceLROnPlateau after each epoch's validation, stepped
  // as Lightning steps it (interval "epoch", this monitor); the factor is lr_gamma, the floor
  // min_lr.
  std::string plateau_monitor = "val_loss";  // or val_accuracy
  int64_t plateau_patience = 10;
  double plateau_threshold = 1e-4;
  int64_t plateau_cooldown = 0;
  // Lightning's WeightAveraging with get_ema_avg_fn(decay): an exponential moving average of
  // the weights (and batch-norm statistics), updated after every optimizer step from
  // ema_start_step on (0: off); validation, checkpoints' weights and the test use it.
  double ema_decay = 0.0;
  int64_t ema_start_step = 0;
  // torchvision.transforms.v2.MixUp / CutMix on each training batch (lambda ~ Beta(alpha,
  // alpha); 0: off; both: one or the other per batch, evenly).
  double mixup_alpha = 0.0;
  double cutmix_alpha = 0.0;
  // Lightning's StochasticWeightAveraging(swa_lrs, swa_epoch_start, annealing_epochs,
  // annealing_strategy): from the start epoch on, the rate anneals to swa_lrs (per epoch) and the
  // weights at each epoch's start are averaged equally; after the last epoch the model takes the
  // average and batch-norm statistics are recomputed in one pass over the training data
  // (swa_lrs 0: off). swa_epoch_start: a fraction of --epochs ("0.8") or a 1-based epoch ("5").
  double swa_lrs = 0.0;
  std::string swa_epoch_start = "0.8";
  int64_t annealing_epochs = 10;
  std::string annealing_strategy = "cos";  // or linear
  // loop
  int64_t epochs = 10;  // -1 with max_steps: as many epochs as max_steps needs (Lightning's -1)
  // Lightning's max_steps (-1: no limit) and max_time ("DD:HH:MM:SS", or a Slurm time such as
  // "HH:MM:SS"; empty: no limit): training ends at whichever of them and epochs comes first,
  // with a validation, last.h5 (resumable mid-epoch) and the test. max_time counts the training
  // time over every resume.
  int64_t max_steps = -1;
  std::string max_time;
  // Lightning's Tuner.lr_find: "" off; "apply": a learning-rate range test before training, whose
  // suggestion becomes --lr; "only": the test and its suggestion, no training.
  std::string lr_find;
  // Lightning's Tuner.scale_batch_size: "power" or "binsearch" ("": off). The largest batch
  // size whose training steps fit in memory replaces batch_size (trainer_batch_find.cpp).
  std::string scale_batch_size;
  int64_t batch_size = 64;
  uint64_t seed = 42;
  std::string device = "auto";
  std::string precision = "32";
  bool deterministic = false;
  // torch.backends.cudnn.benchmark (Lightning's benchmark=): time cuDNN's algorithms once per
  // convolution shape and keep the fastest; false takes cuDNN's heuristic choice untimed.
  bool cudnn_benchmark = true;
  // torch.set_float32_matmul_precision: highest (float32 arithmetic), high (TF32 tensor cores
  // for float32 GEMMs and convolutions on a GPU) or medium (bf16 products for GEMMs; TF32
  // convolutions). Only --precision 32 on a GPU is affected (kernels::MatmulPrecision).
  std::string float32_matmul_precision = "highest";
  // Capture each training step's forward and backward into a CUDA graph and replay it (one GPU
  // per process, static shapes, no dropout): see nn/graphed_step.h.
  bool cuda_graphs = false;
  int64_t fast_dev_run = 0;  // > 0: that many train and val batches, 1 epoch, no files
  std::string limit_train_batches = "1.0";  // "0.25": a fraction of the batches; "40": a count
  std::string limit_val_batches = "1.0";
  // Lightning's num_sanity_val_steps: validation batches run before the first training step
  // (nothing logged), so a broken validation path fails in seconds; 0 off, -1 all of them.
  int64_t num_sanity_val_steps = 2;
  std::string limit_test_batches = "1.0";
  int64_t overfit_batches = 0;  // > 0: train and validate on the same first batches
  // Lightning's val_check_interval ("0.25": four validations an epoch; "500": every 500
  // batches; the epoch's end always validates) and check_val_every_n_epoch.
  std::string val_check_interval = "1.0";
  int64_t check_val_every_n_epoch = 1;
  // Lightning's accumulate_grad_batches: sum the gradients of N batches (each loss divided by
  // N) before one optimizer step; under data parallelism only the N-th backward allreduces.
  int64_t accumulate_grad_batches = 1;
  // Lightning's GradientAccumulationScheduler(scheduling={E: N, ...}) as "E:N,...": from epoch E
  // (0-based) on, accumulate N batches (1 before the first E); "" : accumulate_grad_batches.
  std::string accumulation_schedule;
  // Lightning's log_every_n_steps: the training loss of every n-th step to TensorBoard (0: off).
  int64_t log_every_n_steps = 50;
  bool log_grad_norm = false;  // also the gradient 2-norm at those steps (train/grad_norm_step)
  // TensorBoard histograms of every parameter at each epoch's end (weights/<name>), as the
  // usual on_train_epoch_end add_histogram loop of a LightningModule.
  bool log_histograms = false;
  // TensorBoard images: the first N images of each epoch's first training batch, as the model
  // gets them (augmented, mixed), back on the pixel scale in one grid (train/images; 0: off).
  int64_t log_images = 0;
  // TensorBoard: each class's recall and precision at every validation and at the test
  // (val/recall/<class>, ...), as torchmetrics' average=None.
  bool log_per_class = false;
  // Lightning's DeviceStatsMonitor: GPU allocator peak/reserved, host RSS and CPU use per epoch.
  bool log_device_stats = false;
  // The device's peak TFLOP/s for the MFU column (Lightning's Throughput(available_flops)):
  // for CPUs and GPUs nn/throughput.h does not know; 0: the table's figure, if any.
  double peak_tflops = 0;
  // torch.autograd.detect_anomaly (Lightning's detect_anomaly=True): find the first module or
  // backward op that makes inf/nan (slow: a device read per module and op).
  bool detect_anomaly = false;
  // Lightning's PyTorchProfiler, as a timeline: "START:END" records optimizer steps START to
  // END - 1 (0-based) as Chrome trace events, every rank's in the run's trace.json ("": off).
  std::string profiler_trace;
  // Lightning's gradient_clip_val / gradient_clip_algorithm (0: off).
  double gradient_clip_val = 0.0;
  std::string gradient_clip_algorithm = "norm";  // or value
  // Lightning's EarlyStopping: stop when the monitored validation metric has not improved by
  // more than min_delta for `patience` epochs in a row (0: off).
  int64_t early_stopping_patience = 0;
  std::string early_stopping_monitor = "val_loss";  // or val_accuracy
  double early_stopping_min_delta = 0.0;
  // EarlyStopping's stopping_threshold (stop once the monitor is better than it) and
  // divergence_threshold (stop once it is worse): numbers, "" for off. Either turns early
  // stopping on without a patience. While it is on, a monitored value that is not finite stops
  // training at once (EarlyStopping's check_finite=True).
  std::string early_stopping_stopping_threshold;
  std::string early_stopping_divergence_threshold;
  // Lightning's min_epochs / min_steps: an early stop is put off until this many epochs are
  // complete and this many optimizer steps taken; the limits (--epochs, --max-steps,
  // --max-time) still end training (0: no minimum).
  int64_t min_epochs = 0;
  int64_t min_steps = 0;
  // Whether EarlyStopping is on (a patience or a threshold).
  bool early_stopping() const {
    return early_stopping_patience > 0 || !early_stopping_stopping_threshold.empty() ||
           !early_stopping_divergence_threshold.empty();
  }
  // Lightning's devices=N: started without mpirun/srun, mlai_train starts N processes on this
  // machine itself (through mpirun); under mpirun/srun it must be the ranks started (0: any).
  int64_t devices = 0;
  // data parallel (world > 1 under mpirun or srun)
  std::string dist_backend = "auto";  // auto: nccl on GPUs, mpi on CPUs
  double bucket_cap_mb = 25.0;
  bool overlap = true;            // false: --no-overlap
  // PyTorch DDP's communication hook: none, fp16 (fp16_compress_hook) or bf16
  // (bf16_compress_hook): float32 gradient buckets cross the network in 16 bits; powersgd
  // (powerSGD_hook): as rank-r factors, from step powersgd_start_iter on
  std::string ddp_comm_hook = "none";
  int64_t powersgd_rank = 1;           // PowerSGDState's matrix_approximation_rank
  int64_t powersgd_start_iter = 1000;  // its start_powerSGD_iter
  bool powersgd() const { return ddp_comm_hook == "powersgd" || ddp_comm_hook == "powerSGD_hook"; }
  // ddp; zero1: DDP with the optimizer state sharded over the ranks (ZeRO stage 1, nn/zero.h;
  // PyTorch's ZeroRedundancyOptimizer, Lightning's deepspeed_stage_1); zero2: the gradients
  // sharded too, each reduced to its owner (ZeRO stage 2, Lightning's deepspeed_stage_2);
  // zero3: the parameters too, gathered unit by unit (ZeRO stage 3, Lightning's fsdp);
  // hybrid_shard: zero3 within each node, replicated across the nodes (FSDP's HYBRID_SHARD)
  std::string strategy = "ddp";
  bool zero() const { return zero_stage() > 0; }
  int zero_stage() const {
    if (strategy == "zero1") return 1;
    if (strategy == "zero2") return 2;
    return strategy == "zero3" || strategy == "hybrid_shard" ? 3 : 0;
  }
  // zero2 and zero3: each gradient is reduced only to the rank that owns it.
  bool sharded_gradients() const { return zero_stage() >= 2; }
  // The ranks one model is sharded over (hybrid sharding, nn/zero.h): auto (every rank, or the
  // node's under hybrid_shard), world, node, or a number that divides the world size. Fewer
  // than the world: the groups of that many consecutive ranks each shard the model, and the
  // ranks holding the same shard in each group sum its gradients (FSDP's HYBRID_SHARD with a
  // device mesh; DeepSpeed's MiCS shard size).
  std::string shard_size = "auto";
  // zero3's prefetching, FSDP's backward_prefetch (backward_pre, backward_post or none) and
  // forward_prefetch: the next unit's gather started before this one computes (nn/zero.h).
  std::string backward_prefetch = "backward_pre";
  bool forward_prefetch = false;
  // Checkpoints under ZeRO (Lightning's FSDPStrategy(state_dict_type=...)): full (one file,
  // gathered on rank 0) or sharded (a directory in which each rank writes what it owns,
  // nn/checkpoint_shards.h).
  std::string state_dict_type = "full";
  // Lightning's AsyncCheckpointIO: a save copies the checkpoint to host memory and a thread
  // writes it while training goes on (nn/trainer_checkpoint.cpp).
  bool async_checkpoint = false;
  // ModelCheckpoint(save_weights_only=True): checkpoints without the optimizer's state or a
  // weight average's tensors beside the weights (a signal's last.h5 keeps everything).
  bool save_weights_only = false;
  std::string lr_scale = "none";  // linear: lr *= world size
  bool sync_bn = false;           // data parallel: batch-norm statistics over all ranks
  double dist_timeout = 600.0;    // seconds a collective may take before the job aborts (0: never)
  // files
  std::string log_dir = "logs";
  std::string experiment_name = "default";
  int64_t checkpoint_every = 1;  // last.h5 every this many epochs and at the end
  // Lightning's ModelCheckpoint(monitor, save_top_k): best.h5 whenever the monitored validation
  // metric improves; with save_top_k K > 1 also the K best as epoch=E-step=S-<monitor>=V.h5
  // (-1: every validation's; 0: no best.h5 either).
  std::string checkpoint_monitor = "val_accuracy";  // or val_loss
  int64_t save_top_k = 1;
  // Lightning's ModelCheckpoint(every_n_train_steps): last.h5 every N optimizer steps too, so a
  // run that dies mid-epoch (a node failure, no signal) resumes from there (0: off).
  int64_t checkpoint_every_n_steps = 0;
  // Lightning's ModelCheckpoint(train_time_interval): last.h5 also whenever this much wall time
  // (a duration as max_time's) has passed since it was last written, so a node failure loses
  // at most that much work whatever the epoch length ("": off).
  std::string checkpoint_train_time_interval;
  // Which weights the final test uses, as Lightning's trainer.test(ckpt_path=...): "last" (the
  // weights training ended with) or "best" (best.h5's: the best validation by
  // checkpoint_monitor).
  std::string test_ckpt = "last";  // or a checkpoint or weights file (Lightning's ckpt_path)
  // Lightning's trainer.test(ckpt_path=FILE) without fit: test the weights of test_ckpt (a
  // file) on the data set's test split, and train nothing.
  bool test_only = false;
  // Lightning's trainer.validate(ckpt_path=FILE): the same on the validation split (the
  // checkpoint run's own, from its --val-split and --seed).
  bool validate_only = false;
  std::string resume;
  std::string
      pretrained;  // initial weights by name (model/<name>) from a checkpoint or weights file
  bool reset_head = false;  // --pretrained: keep the head (fc.weight/fc.bias) freshly initialised
  // Fine-tuning (nn/finetune.h): Lightning's BaseFinetuning.freeze(backbone, train_bn) for the
  // whole run with freeze_backbone (train_bn unless freeze_bn); BackboneFinetuning with
  // unfreeze_backbone_at_epoch >= 0 (0-based, as Lightning's): frozen until that epoch, then the
  // backbone trains in a second parameter group at backbone_lr_ratio x the head's rate, which
  // grows backbone_lr_growth-fold each epoch after, up to the head's rate.
  bool freeze_backbone = false;
  // BaseFinetuning.freeze(modules) for named modules instead of the whole backbone: a comma
  // list of dotted module names ("conv1,bn1,layer1"); the same train_bn and unfreeze rules.
  std::string freeze;
  bool freeze_bn = false;
  int64_t unfreeze_backbone_at_epoch = -1;
  double backbone_lr_ratio = 0.1;
  double backbone_lr_growth = 1.5;
  bool progress = true;     // live progress line when stdout is a terminal

  // Throws std::invalid_argument with a one-line message naming the flag.
  void validate() const;
};

// --class-weights W0,W1,...: the weights (each a number >= 0, not all 0); errors name the flag.
std::vector<double> parse_class_weights(const std::string& text);
nlohmann::json to_json(const Config& c);

// --accumulation-schedule "E:N,...": (epoch, count) pairs, epochs increasing from 0 up, counts in
// [1, 2^20]; throws naming the flag on anything else.
std::vector<std::pair<int64_t, int64_t>> parse_accumulation_schedule(const std::string& text);
// The batches epoch `epoch` (0-based) accumulates per optimizer step: --accumulation-schedule's
// count for it, else --accumulate-grad-batches.
int64_t accumulation_at(const Config& c, int64_t epoch);
// Whether any epoch accumulates more than one batch.
bool accumulates(const Config& c);

// --swa-lrs: the 0-based epoch SWA starts at, as Lightning computes it (a fraction f of --epochs:
// int(epochs * f); an epoch number n: n - 1; never below 0).
int64_t swa_start_epoch(const Config& c);

// --test-only: the model and data settings of the checkpoint's run (`from`), except those in
// `given` (setting names, as in to_json, that the command line or --config set).
void take_model_and_data_settings(Config& c, const Config& from, const std::set<std::string>& given);
Config config_from_json(const nlohmann::json& j);

// How many batches a limit leaves out of `available`, as Lightning reads it: a number with a
// decimal point is a fraction in [0, 1] ("1.0" = all), a whole number is a count. Throws
// naming `flag` on anything else.
int64_t limit_batches(const std::string& limit, int64_t available, const std::string& flag);

// --float32-matmul-precision highest|high|medium (torch.set_float32_matmul_precision's
// names). Throws naming the flag and the choices on anything else.
kernels::MatmulPrecision parse_matmul_precision(const std::string& text);
// --ddp-comm-hook: the dtype float32 gradient buckets travel in (float32: not compressed to 16
// bits: none or powersgd).
tensor::DType parse_ddp_comm_hook(const std::string& text);
// --auto-augment: none, ta_wide, ra, augmix, imagenet, cifar10, svhn.
kernels::AutoAugmentPolicy auto_augment_policy(const std::string& text);

// Seconds in a duration written as Lightning's max_time ("DD:HH:MM:SS") or as a Slurm time
// ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"); a field may have a decimal
// point ("0:0.5": half a second). Throws naming `flag` on anything else, and on zero.
double parse_duration(const std::string& text, const std::string& flag);

// --profiler-trace START:END: the first and one past the last optimizer step to record
// ({-1, -1} for ""). Throws naming the flag on anything else.
std::pair<int64_t, int64_t> parse_trace_steps(const std::string& text);

}  // namespace mlai::nn
