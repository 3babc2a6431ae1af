// mlai_train's flags (see train_flags.h).
#include "bin/train_flags.h"

#include <exception>
#include <map>

#include "io/dataset.h"
#include "nn/checkpoint_shards.h"
#include "nn/models.h"

namespace mlai::train_flags {

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

}  // namespace

void add_flags(CLI::App& app, mlai::nn::Config& c, std::vector<std::string>& hidden) {
  using mlai::nn::model_names;
  app.add_option("--arch", c.arch, "Model: " + join(model_names()))->capture_default_str();
  app.add_option("--hidden", hidden, "Hidden widths of the mlp, comma-separated (default 128,256)")
      ->delimiter(',');
  app.add_option("--dropout", c.dropout,
                 "Dropout after each hidden layer of the mlp, between the two convolutions "
                 "of each wrn block, before the mobilenets' classifier (0.2 there unless "
                 "given, as torchvision), and the vits' dropout (after the position "
                 "embeddings, attention and in each MLP, as torchvision's dropout=)")
      ->capture_default_str();
  app.add_option("--dataset", c.dataset, "Dataset: " + join(mlai::io::dataset_names()))
      ->capture_default_str();
  app.add_option("--data-dir", c.data_dir,
                 "Directory with the dataset's files (default for fashion-mnist: "
                 "/usr/share/datasets/fashion-mnist; others: data/<name>); for folder, an "
                 "ImageFolder tree: DIR/<class>/*.png|jpg, or DIR/train/<class>/... beside "
                 "DIR/test or DIR/val");
  app.add_option("--data-path", c.data_path,
                 "--dataset hdf5: a packed file from mlai_convert, TRAIN.h5 or TRAIN.h5,TEST.h5 "
                 "(alone, the test set is the same name with 'train' -> 'test', if it exists)");
  app.add_flag("--cache", c.cache,
               "--dataset hdf5: read the whole file into memory once per process instead of "
               "streaming samples from it; folder: decode every image once, into memory, "
               "instead of in the loader's workers each epoch (IDX and CIFAR files are always "
               "read whole)");
  app.add_option("--image-size", c.image_size,
                 "--dataset folder: resize every image to HxW (or NxN) as torchvision's "
                 "Resize((H, W)) does on PIL images (default: the size they all share)");
  app.add_option("--image-channels", c.image_channels,
                 "--dataset folder: 1 (gray) or 3 (RGB), as PIL's convert('L') / convert('RGB') "
                 "(default: 3 if any image is in colour, else 1)");
  app.add_option("--mean", c.mean,
                 "Per-channel mean on [0, 1] for normalization, comma-separated, instead of the "
                 "data set's own (with --std; ImageNet's 0.485,0.456,0.406 for a "
                 "torchvision-pretrained backbone)")
      ->delimiter(',');
  app.add_option("--std", c.std,
                 "Per-channel standard deviation on [0, 1] for normalization, with --mean "
                 "(ImageNet's 0.229,0.224,0.225)")
      ->delimiter(',');
  app.add_option("--val-split", c.val_split,
                 "Fraction of the training set held out for validation (seeded)")
      ->capture_default_str();
  app.add_flag("--val-on-test", c.val_on_test,
               "Validate on the test split and train on the whole training split, as "
               "Lightning's CIFAR-10 tutorials do (--val-split unused)");
  app.add_option(
         "--augment", c.augment,
         "Training augmentation: auto (random 4-pixel-padded crop + flip for cifar10/100 "
         "and stl10, none otherwise), none, crop-flip, or rrc / rrc-flip (RandomResizedCrop at the "
         "image's size, and a flip)")
      ->capture_default_str();
  app.add_option("--rrc-scale", c.rrc_scale, "rrc: the crop's share of the image area, MIN,MAX")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
  app.add_option("--rrc-ratio", c.rrc_ratio, "rrc: the crop's aspect ratio (width/height), MIN,MAX")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
  app.add_option("--auto-augment", c.auto_augment,
                 "torchvision's automatic augmentation on each training image after --augment's "
                 "crop and flip, before the normalization: none, ta_wide (TrivialAugmentWide), ra "
                 "(RandAugment), augmix (AugMix), or AutoAugment's imagenet, cifar10 or svhn "
                 "policy")
      ->capture_default_str();
  app.add_option("--ra-num-ops", c.ra_num_ops,
                 "--auto-augment ra: operations per image (RandAugment's num_ops)")
      ->capture_default_str();
  app.add_option("--ra-magnitude", c.ra_magnitude,
                 "--auto-augment ra: the magnitude bin of 31, 0..30 (RandAugment's magnitude)")
      ->capture_default_str();
  app.add_option("--augmix-severity", c.augmix_severity,
                 "--auto-augment augmix: the severity of its operations, 1..10 (AugMix's severity)")
      ->capture_default_str();
  app.add_option("--random-erasing", c.random_erasing,
                 "torchvision's RandomErasing(p) after the normalization: the probability that a "
                 "training image gets a random box set to 0 (0: off; torchvision's default 0.5)")
      ->capture_default_str();
  app.add_option("--erasing-scale", c.erasing_scale,
                 "--random-erasing: the box's share of the image area, MIN,MAX")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
  app.add_option("--erasing-ratio", c.erasing_ratio,
                 "--random-erasing: the box's aspect ratio (height/width), MIN,MAX")
      ->delimiter(',')
      ->expected(2)
      ->capture_default_str();
  app.add_option("--prefetch", c.prefetch,
                 "Batches the workers prepare ahead of training (pinned host slots on GPUs)")
      ->capture_default_str();
  app.add_option("--workers", c.workers, "Data-loader threads (0: load in the training thread)")
      ->capture_default_str();
  app.add_option("--criterion", c.criterion,
                 "Loss: cross_entropy, or nll (log_softmax + NLL loss, the same value)")
      ->capture_default_str();
  app.add_option("--mixup-alpha", c.mixup_alpha,
                 "MixUp each training batch with itself rolled by one (torchvision's v2.MixUp), "
                 "lambda ~ Beta(alpha, alpha); 0: off")
      ->capture_default_str();
  app.add_option("--cutmix-alpha", c.cutmix_alpha,
                 "CutMix each training batch (torchvision's v2.CutMix); with --mixup-alpha too, "
                 "one or the other per batch; 0: off")
      ->capture_default_str();
  app.add_option("--label-smoothing", c.label_smoothing, "Label smoothing in [0, 1]")
      ->capture_default_str();
  app.add_option("--class-weights", c.class_weights,
                 "Weight the loss per class, as CrossEntropyLoss(weight=): balanced "
                 "(n / (classes x count) over the training split) or W0,W1,... (one per class)");
  app.add_option("--optimizer", c.optimizer,
                 "Optimizer: sgd, adam, adamw, or the layer-wise adaptive lars and lamb for "
                 "large batches")
      ->capture_default_str();
  app.add_option("--lr", c.lr, "Learning rate (the peak rate for onecycle)")->capture_default_str();
  app.add_option("--momentum", c.momentum, "SGD and LARS momentum")->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay,
                 "Weight decay (L2 for sgd/adam, decoupled for adamw)")
      ->capture_default_str();
  app.add_flag("--no-bias-decay", c.no_bias_decay,
               "Weight decay on weight matrices and conv filters only: not on biases and "
               "batch-norm parameters (Bag of Tricks' no-bias-decay)");
  app.add_flag("--nesterov", c.nesterov, "Nesterov momentum (sgd, lars)");
  app.add_option("--beta1", c.beta1, "Adam beta1")->capture_default_str();
  app.add_option("--beta2", c.beta2, "Adam beta2")->capture_default_str();
  app.add_option("--eps", c.eps,
                 "Adam and LAMB epsilon (timm's and apex's LAMB default to 1e-6), LARS's in its "
                 "trust ratio's denominator")
      ->capture_default_str();
  app.add_option("--trust-coefficient", c.trust_coefficient,
                 "LARS: the trust coefficient (eta) of each layer's rate, eta * |w| / (|g| + "
                 "weight_decay * |w| + eps)")
      ->capture_default_str();
  app.add_flag("--trust-clip", c.trust_clip,
               "LARS: LARC's clipping, min(trust ratio / lr, 1); LAMB: min(trust ratio, 1)");
  app.add_option("--lr-schedule", c.lr_schedule,
                 "constant, step, multistep, exponential, cosine, cosine_restarts, "
                 "warmup_cosine, onecycle, linear or polynomial (per step), or plateau "
                 "(ReduceLROnPlateau, after each epoch's validation)")
      ->capture_default_str();
  app.add_option("--lr-step-epochs", c.lr_step_epochs, "step schedule: decay every N epochs")
      ->capture_default_str();
  app.add_option("--lr-milestones", c.lr_milestones,
                 "multistep schedule (MultiStepLR): the epochs to decay at, comma-separated "
                 "(e.g. 100,150)")
      ->delimiter(',');
  app.add_option("--lr-gamma", c.lr_gamma,
                 "step, multistep, exponential and plateau schedules: decay factor")
      ->capture_default_str();
  app.add_option("--warmup-steps", c.warmup_steps,
                 "Linear warmup over the first N optimizer steps in front of the constant, step, "
                 "multistep, exponential or cosine schedule (warmup_cosine: its ramp)")
      ->capture_default_str();
  app.add_option("--min-lr", c.min_lr,
                 "cosine, linear and polynomial schedules: final learning rate; plateau: the floor")
      ->capture_default_str();
  app.add_option("--lr-power", c.lr_power,
                 "polynomial schedule: lr = min + (lr - min) x (1 - progress)^power "
                 "(PyTorch's PolynomialLR)")
      ->capture_default_str();
  app.add_option("--lr-restart-epochs", c.lr_restart_epochs,
                 "cosine_restarts schedule (CosineAnnealingWarmRestarts, SGDR): T_0, the "
                 "epochs of the first cosine cycle")
      ->capture_default_str();
  app.add_option("--lr-restart-mult", c.lr_restart_mult,
                 "cosine_restarts schedule: T_mult, each cycle this many times longer than the "
                 "one before")
      ->capture_default_str();
  app.add_option("--plateau-monitor", c.plateau_monitor,
                 "plateau: val_loss (lower is better) or val_accuracy")
      ->capture_default_str();
  app.add_option("--plateau-patience", c.plateau_patience,
                 "plateau: epochs without improvement before the rate drops")
      ->capture_default_str();
  app.add_option("--plateau-threshold", c.plateau_threshold,
                 "plateau: relative change that counts as an improvement")
      ->capture_default_str();
  app.add_option("--plateau-cooldown", c.plateau_cooldown,
                 "plateau: epochs after a drop before bad epochs count again")
      ->capture_default_str();
  app.add_option("--swa-lrs", c.swa_lrs,
                 "Stochastic weight averaging (Lightning's StochasticWeightAveraging): the rate "
                 "SWA anneals to (0: off)")
      ->capture_default_str();
  app.add_option("--swa-epoch-start", c.swa_epoch_start,
                 "--swa-lrs: the epoch SWA starts at, a fraction of --epochs (0.8) or an epoch "
                 "number (5)")
      ->capture_default_str();
  app.add_option("--annealing-epochs", c.annealing_epochs,
                 "--swa-lrs: epochs over which the rate anneals to --swa-lrs")
      ->capture_default_str();
  app.add_option("--annealing-strategy", c.annealing_strategy, "--swa-lrs: cos or linear annealing")
      ->capture_default_str();
  app.add_option("--ema-decay", c.ema_decay,
                 "Average the weights (EMA, e.g. 0.999) after every optimizer step; validation, "
                 "checkpoints and the test use the average (0: off)")
      ->capture_default_str();
  app.add_option("--ema-start-step", c.ema_start_step,
                 "--ema-decay: the first optimizer step (0-based) the average follows; it "
                 "starts as a copy of the weights then")
      ->capture_default_str();
  app.add_option("--epochs", c.epochs,
                 "Epochs to train (-1 with --max-steps: as many as the steps need, the default "
                 "when --max-steps is given alone)")
      ->capture_default_str();
  app.add_option("--max-steps", c.max_steps,
                 "Stop after N optimizer steps (-1: no limit); the schedule then spans the steps")
      ->capture_default_str();
  app.add_option("--scale-batch-size", c.scale_batch_size,
                 "Lightning's Tuner.scale_batch_size before training: trials of 3 training steps "
                 "from batch size 2, doubling while they fit in memory (power), then bisecting "
                 "between the last that fit and the first that did not (binsearch); the largest "
                 "that fits becomes --batch-size (one process only)");
  app.add_option("--lr-find", c.lr_find,
                 "Lightning's learning-rate range test before training (100 steps, 1e-8 to 1); "
                 "its suggestion replaces --lr. 'only': the test alone, no training")
      ->expected(0, 1);
  app.add_option("--max-time", c.max_time,
                 "Stop after this much training, over every resume: DD:HH:MM:SS (Lightning) or "
                 "a Slurm time (HH:MM:SS, D-HH:MM, ...); validates, saves last.h5 and tests");
  app.add_option("--batch-size", c.batch_size, "Batch size (per process)")->capture_default_str();
  app.add_option("--seed", c.seed, "Seed for initialisation, shuffling, splits and dropout")
      ->capture_default_str();
  app.add_option("--device", c.device, "cpu, cuda, cuda:N or auto (a GPU when there is one)")
      ->capture_default_str();
  app.add_option("--precision", c.precision,
                 "32, 16 (fp16 mixed precision: fp32 master weights, dynamic loss scaling) or "
                 "bf16 (no scaling); Lightning's 16-mixed/bf16-mixed also work")
      ->capture_default_str();
  app.add_option("--float32-matmul-precision", c.float32_matmul_precision,
                 "highest, high or medium (torch.set_float32_matmul_precision): with --precision "
                 "32 on a GPU, high lets float32 GEMMs and convolutions use TF32 tensor cores "
                 "(10-bit mantissa, float32 accumulation), medium bf16 products for GEMMs")
      ->capture_default_str();
  app.add_option("--cudnn-benchmark", c.cudnn_benchmark,
                 "true: time cuDNN's convolution algorithms once per shape and keep the fastest "
                 "(torch.backends.cudnn.benchmark, Lightning's benchmark=True); false: cuDNN's "
                 "heuristic choice, no timing (PyTorch's default)")
      ->capture_default_str();
  app.add_flag("--deterministic", c.deterministic,
               "Deterministic algorithms only (CPU runs are always deterministic)");
  app.add_flag("--cuda-graphs", c.cuda_graphs,
               "Capture each whole training step (forward, backward, loss scaling and the "
               "optimizer step) into a CUDA graph and replay it (one GPU per process, no "
               "dropout; the epoch's last smaller batch runs eagerly)");
  app.add_option("--fast-dev-run", c.fast_dev_run,
                 "Off by default. Runs N training and validation batches (N defaults to 1) in "
                 "one epoch to check the set-up; writes no logs or checkpoints")
      ->expected(0, 1);
  app.add_option("--limit-train-batches", c.limit_train_batches,
                 "Batches per epoch: a fraction (0.25) or a count (40)")
      ->capture_default_str();
  app.add_option("--num-sanity-val-steps", c.num_sanity_val_steps,
                 "Validation batches run before training starts (Lightning's sanity check): a "
                 "broken validation path fails in seconds, not after an epoch; 0 off, -1 all")
      ->capture_default_str();
  app.add_option("--limit-val-batches", c.limit_val_batches,
                 "Validation batches: a fraction (0.25) or a count (40); 0 skips validation")
      ->capture_default_str();
  app.add_option("--limit-test-batches", c.limit_test_batches,
                 "Test batches at the end: a fraction or a count; 0 skips the test")
      ->capture_default_str();
  app.add_option("--val-check-interval", c.val_check_interval,
                 "Validate within the epoch too: a fraction of it (0.25) or every N batches; "
                 "the epoch's end always validates")
      ->capture_default_str();
  app.add_option("--check-val-every-n-epoch", c.check_val_every_n_epoch,
                 "Validate only every N-th epoch (and the last)")
      ->capture_default_str();
  app.add_option("--overfit-batches", c.overfit_batches,
                 "Train and validate on the same first N batches (a sanity check)")
      ->capture_default_str();
  app.add_option("--accumulate-grad-batches", c.accumulate_grad_batches,
                 "Sum the gradients of N batches before each optimizer step (effective batch "
                 "N x --batch-size x ranks)")
      ->capture_default_str();
  app.add_option("--accumulation-schedule", c.accumulation_schedule,
                 "Lightning's GradientAccumulationScheduler: EPOCH:COUNT,... (epochs from 0): "
                 "from each EPOCH on, accumulate COUNT batches per optimizer step (1 before the "
                 "first), as 0:8,4:4,8:1; the learning-rate schedule spans the steps this makes");
  app.add_option("--gradient-clip-val", c.gradient_clip_val,
                 "Clip gradients (after unscaling and averaging over ranks); 0: off")
      ->capture_default_str();
  app.add_option("--gradient-clip-algorithm", c.gradient_clip_algorithm,
                 "norm (the global 2-norm, clip_grad_norm_) or value (each element, "
                 "clip_grad_value_)")
      ->capture_default_str();
  app.add_option("--early-stopping-patience", c.early_stopping_patience,
                 "Stop when the monitored validation metric has not improved for N epochs "
                 "(0: off)")
      ->capture_default_str();
  app.add_option("--early-stopping-monitor", c.early_stopping_monitor,
                 "val_loss (lower is better) or val_accuracy")
      ->capture_default_str();
  app.add_option("--early-stopping-min-delta", c.early_stopping_min_delta,
                 "Smaller changes do not count as an improvement")
      ->capture_default_str();
  app.add_option("--early-stopping-stopping-threshold", c.early_stopping_stopping_threshold,
                 "Stop as soon as the monitored metric is better than this (EarlyStopping's "
                 "stopping_threshold); early stopping, while on, also stops at a value that is "
                 "not finite");
  app.add_option("--early-stopping-divergence-threshold", c.early_stopping_divergence_threshold,
                 "Stop as soon as the monitored metric is worse than this (EarlyStopping's "
                 "divergence_threshold)");
  app.add_option("--min-epochs", c.min_epochs,
                 "Lightning's min_epochs: an early stop waits until this many epochs are done")
      ->capture_default_str();
  app.add_option("--min-steps", c.min_steps,
                 "Lightning's min_steps: an early stop waits until this many optimizer steps")
      ->capture_default_str();
  app.add_option("--log-every-n-steps", c.log_every_n_steps,
                 "TensorBoard: the training loss and lr of every n-th optimizer step (0: off)")
      ->capture_default_str();
  app.add_flag("--log-grad-norm", c.log_grad_norm,
               "TensorBoard: also the gradient 2-norm at those steps (averaged over ranks, "
               "unscaled, before clipping)");
  app.add_flag("--log-histograms", c.log_histograms,
               "TensorBoard: a histogram of every parameter at each epoch's end "
               "(weights/<name>: the HISTOGRAMS and DISTRIBUTIONS tabs)");
  app.add_flag("--detect-anomaly", c.detect_anomaly,
               "Find where a run goes nan (torch.autograd.detect_anomaly): every module's output "
               "and every backward op's gradients are checked for inf/nan, and the first one "
               "made from finite input stops the run naming it (slow)");
  app.add_flag("--log-device-stats", c.log_device_stats,
               "Lightning's DeviceStatsMonitor: each epoch's GPU memory peak and reserve, the "
               "process's resident memory (now, peak) and CPU use (100% = one core), max over "
               "ranks: epoch line, metrics.csv and TensorBoard (device_stats/...)");
  app.add_option("--peak-tflops", c.peak_tflops,
                 "The device's peak TFLOP/s in the run's precision, for the MFU beside the epoch "
                 "line's TFLOP/s (Lightning's available_flops): for CPUs and GPUs mlai's table "
                 "does not know (it has NVIDIA's H100, H200, GH200, A100, L40S, L4, A10, V100); "
                 "0: the table's");
  app.add_flag("--log-per-class", c.log_per_class,
               "TensorBoard: each class's recall and precision at every validation and the "
               "test (val/recall/<class>, val/precision/<class>, test/...)");
  app.add_option("--profiler-trace", c.profiler_trace,
                 "A timeline of optimizer steps START to END - 1 (0-based) in the run's "
                 "trace.json (Chrome trace events: ui.perfetto.dev, chrome://tracing): each "
                 "step's data wait, forward by module, backward by op, gradient buckets' "
                 "allreduces and optimizer step, every rank's, as START:END");
  app.add_option("--log-images", c.log_images,
                 "TensorBoard: the first N images of each epoch's first training batch, as the "
                 "model gets them (augmented, mixed), in one grid (train/images; 0: off)")
      ->capture_default_str();
  app.add_option("--log-dir", c.log_dir, "Root of the experiment directories")
      ->capture_default_str();
  app.add_option("--experiment-name", c.experiment_name,
                 "Logs go to <log-dir>/<name>/version_<n or Slurm job id>/")
      ->capture_default_str();
  app.add_option("--checkpoint-every", c.checkpoint_every,
                 "Write last.h5 every N epochs and at the end (0: only at the end or on a signal)")
      ->capture_default_str();
  app.add_option("--checkpoint-monitor", c.checkpoint_monitor,
                 "best.h5 holds the best validation by this: val_accuracy or val_loss")
      ->capture_default_str();
  app.add_option("--save-top-k", c.save_top_k,
                 "Also keep the K best validations' checkpoints as "
                 "epoch=E-step=S-<monitor>=V.h5 (1: best.h5 only; -1: all; 0: no best.h5)")
      ->capture_default_str();
  app.add_option("--test-ckpt", c.test_ckpt,
                 "Weights the final test uses: last (those training ended with), best "
                 "(best.h5's, the best validation by --checkpoint-monitor) or a checkpoint file")
      ->capture_default_str();
  app.add_flag("--test-only", c.test_only,
               "Train nothing: test --test-ckpt FILE's weights on the test split (the model and "
               "data settings default to the checkpoint's run)");
  app.add_flag("--validate-only", c.validate_only,
               "Train nothing: evaluate --test-ckpt FILE's weights on the validation split "
               "(Lightning's trainer.validate), the checkpoint run's own (its --val-split and "
               "--seed, like the other model and data settings, are the defaults)");
  app.add_option("--checkpoint-every-n-steps", c.checkpoint_every_n_steps,
                 "Also write last.h5 every N optimizer steps, mid-epoch included (0: off)")
      ->capture_default_str();
  app.add_option("--checkpoint-train-time-interval", c.checkpoint_train_time_interval,
                 "Also write last.h5 whenever this much wall time has passed since it was last "
                 "written (Lightning's ModelCheckpoint(train_time_interval)), mid-epoch included: "
                 "DD:HH:MM:SS or a Slurm time (30: 30 minutes)");
  app.add_option("--resume", c.resume,
                 "Continue exactly from a checkpoint (e.g. .../last.h5), or 'last': the newest "
                 "last.h5 of this --experiment-name under --log-dir (none: start afresh); also "
                 "on another number of ranks, --batch-size or --accumulate-grad-batches (the "
                 "epoch goes on from the sample it reached)")
      ->check(
          [](const std::string& v) -> std::string {
            if (v == "last" || mlai::nn::checkpoint_exists(v)) return "";
            return "no checkpoint file " + v + " (give a last.h5, or 'last')";
          },
          "FILE or last");
  app.add_option("--pretrained", c.pretrained,
                 "Start from these weights (an mlai checkpoint, or a file from "
                 "tools/torch_interop.py export); names and shapes must match")
      ->check(CLI::ExistingPath);
  app.add_flag("--reset-head", c.reset_head,
               "--pretrained: do not load the head (fc.weight/fc.bias; the mlp's last layer): "
               "fine-tune for another class count");
  app.add_flag("--freeze-backbone", c.freeze_backbone,
               "Train the head alone (fc; the mlp's last layer): the backbone's weights get no "
               "gradients (Lightning's BaseFinetuning.freeze); its batch norms still train");
  app.add_option("--freeze", c.freeze,
                 "Freeze these modules only (comma list of names from the model summary, like "
                 "conv1,bn1,layer1); their batch norms still train unless --freeze-bn; "
                 "--unfreeze-backbone-at-epoch unfreezes them");
  app.add_flag(
      "--freeze-bn", c.freeze_bn,
      "--freeze-backbone / --freeze: freeze batch norm too (its parameters, and its running "
      "statistics: train_bn=False); backward then stops at the head");
  app.add_option("--unfreeze-backbone-at-epoch", c.unfreeze_backbone_at_epoch,
                 "Lightning's BackboneFinetuning: the backbone is frozen until this epoch "
                 "(0-based), then trains at --backbone-lr-ratio x the head's rate, growing "
                 "--backbone-lr-growth-fold each epoch up to the head's rate (-1: never)")
      ->capture_default_str();
  app.add_option("--backbone-lr-ratio", c.backbone_lr_ratio,
                 "--unfreeze-backbone-at-epoch: the backbone's first rate, as a share of the "
                 "head's")
      ->capture_default_str();
  app.add_option("--backbone-lr-growth", c.backbone_lr_growth,
                 "--unfreeze-backbone-at-epoch: the backbone's rate is multiplied by this each "
                 "epoch after (capped at the head's)")
      ->capture_default_str();
  app.add_flag("!--no-progress", c.progress, "No live progress line");
  app.add_option("--devices", c.devices,
                 "Lightning's devices=N: run on N GPUs (or N CPU ranks) of this machine; "
                 "started without mpirun/srun, mlai_train starts the N processes itself "
                 "through mpirun (0: as launched)")
      ->capture_default_str();
  app.add_option("--dist-backend", c.dist_backend,
                 "Data parallel: auto (nccl on GPUs, mpi on CPUs), nccl or mpi")
      ->capture_default_str();
  app.add_option("--bucket-cap-mb", c.bucket_cap_mb, "Data parallel: gradient bucket size (MB)")
      ->capture_default_str();
  app.add_flag("!--no-overlap", c.overlap,
               "Data parallel: start allreduces after backward instead of during it");
  app.add_option("--ddp-comm-hook", c.ddp_comm_hook,
                 "Data parallel: none, fp16 or bf16 (PyTorch DDP's fp16_compress_hook, "
                 "bf16_compress_hook: float32 gradient buckets cross the network in 16 bits, "
                 "divided by the world size, half the bytes), or powersgd (powerSGD_hook: "
                 "matrices as rank-r factors with error feedback)")
      ->capture_default_str();
  app.add_option("--powersgd-rank", c.powersgd_rank,
                 "--ddp-comm-hook powersgd: the factors' rank (matrix_approximation_rank)")
      ->capture_default_str();
  app.add_option("--powersgd-start-iter", c.powersgd_start_iter,
                 "--ddp-comm-hook powersgd: optimizer steps summed uncompressed first "
                 "(start_powerSGD_iter)")
      ->capture_default_str();
  app.add_option("--strategy", c.strategy,
                 "Data parallel: ddp, or zero1: DDP with the optimizer state sharded over the "
                 "ranks (ZeRO stage 1, as PyTorch's ZeroRedundancyOptimizer): each rank keeps and "
                 "updates the state of 1/world of the parameters, then broadcasts them; the same "
                 "updates, bit for bit; or zero2 (ZeRO stage 2): the gradients sharded too, each "
                 "reduced only to the rank that owns it; or zero3 (ZeRO stage 3, FSDP's FULL_SHARD): "
                 "the parameters too, each residual block's gathered for its forward and its "
                 "backward and freed between; or hybrid_shard (FSDP's HYBRID_SHARD): zero3 "
                 "within each node, the nodes holding replicas that sum the gradients "
                 "(--shard-size). Under --precision 16/bf16 they shard the float32 masters too, "
                 "and a weight average. Lightning's names work too: fsdp (zero3), "
                 "deepspeed_stage_1/2/3 (zero1/2/3)")
      ->capture_default_str()
      ->transform(CLI::Transformer(std::map<std::string, std::string>{
                                       {"fsdp", "zero3"},
                                       {"deepspeed_stage_1", "zero1"},
                                       {"deepspeed_stage_2", "zero2"},
                                       {"deepspeed_stage_3", "zero3"}})
                      .description(""));
  app.add_option("--shard-size", c.shard_size,
                 "ZeRO's hybrid sharding: the ranks each copy of the model is sharded over. auto "
                 "(every rank; a node's under hybrid_shard), world, node (the ranks of a node, "
                 "placed in blocks as srun and mpirun place them), or N, a divisor of the world "
                 "size: groups of N consecutive ranks shard it, and the ranks holding the same "
                 "shard in each group sum its gradients, so parameter gathers stay in the group "
                 "(the node's fast links) and only 1/N of the gradients crosses between groups")
      ->capture_default_str();
  app.add_option("--backward-prefetch", c.backward_prefetch,
                 "--strategy zero3 (FSDP's backward_prefetch): backward_pre starts the next "
                 "unit's gather when backward reaches this one (more overlap, one more unit "
                 "held), backward_post once this unit's gradients are done, none when needed")
      ->capture_default_str();
  app.add_flag("--forward-prefetch", c.forward_prefetch,
               "--strategy zero3 (FSDP's forward_prefetch): start the next unit's gather before "
               "this one's forward runs");
  app.add_option("--state-dict-type", c.state_dict_type,
                 "ZeRO checkpoints (Lightning's FSDPStrategy(state_dict_type)): full (one file, "
                 "the state gathered on rank 0 for the write) or sharded (last.h5 and the others "
                 "become directories in which each rank writes the tensors it owns, in parallel "
                 "and without gathering; read as files are, on any number of ranks; "
                 "mlai_convert --checkpoint DIR --out FILE.h5 makes one file of one)")
      ->capture_default_str();
  app.add_flag("--async-checkpoint", c.async_checkpoint,
               "Lightning's AsyncCheckpointIO: a save copies the checkpoint (a ZeRO rank: its "
               "share) to host memory and a thread writes it while training goes on; the next "
               "save, the test and the end of the run wait for it. Costs one copy of the "
               "state in host memory");
  app.add_flag("--save-weights-only", c.save_weights_only,
               "Lightning's ModelCheckpoint(save_weights_only=True): checkpoints hold the "
               "weights, buffers and the run's settings, not the optimizer's state nor a weight "
               "average's training weights (a third of the size with Adam). --pretrained, "
               "--test-ckpt and mlai_predict read them; --resume cannot. last.h5 written on a "
               "signal keeps everything, so a requeued job resumes");
  app.add_option("--lr-scale", c.lr_scale, "none, or linear: multiply --lr by the world size")
      ->capture_default_str();
  app.add_flag("--activation-checkpointing", c.activation_checkpointing,
               "torch.utils.checkpoint around each residual block: keep only the blocks' "
               "inputs for backward and run the blocks again there (less activation memory "
               "for about one more forward pass)");
  app.add_flag("--sync-bn", c.sync_bn,
               "Data parallel: batch-norm statistics over the global batch (SyncBatchNorm)");
  app.add_option("--dist-timeout", c.dist_timeout,
                 "Data parallel: seconds a collective may wait for the other ranks before the job "
                 "aborts (a hung rank; 0: wait forever)")
      ->capture_default_str();
}

std::vector<int64_t> parse_widths(const std::vector<std::string>& parts) {
  std::vector<int64_t> widths;
  for (const auto& w : parts) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != w.size() || v < 1)
      throw CLI::ValidationError("--hidden",
                                 "expected positive widths like 512,256, got '" + w + "'");
    widths.push_back(v);
  }
  return widths;
}

}  // namespace mlai::train_flags
