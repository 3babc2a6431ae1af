// The training loop a Lightning user expects: fit() trains for --epochs, validates each epoch,
// logs (console, metrics.csv, TensorBoard, hparams.json), checkpoints (last.h5, best.h5),
// resumes exactly, stops cleanly on SIGINT/SIGTERM/SIGUSR1 with a checkpoint, and tests on
// the official test set at the end. Under mpirun/srun it trains one model data-parallel:
// each rank takes a shard of every epoch, gradients are averaged by the bucketing reducer,
// metrics are exact global values, and only rank 0 prints, logs and checkpoints.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dist/process_group.h"
#include "dist/reducer.h"
#include "io/dataset.h"
#include "io/loader.h"
#include "io/metrics.h"
#include "io/tensorboard.h"
#include "nn/amp.h"
#include "nn/checkpoint.h"
#include "nn/config.h"
#include "nn/device_stats.h"
#include "nn/experiment.h"
#include "nn/graphed_step.h"
#include "nn/lr_schedule.h"
#include "nn/mixup.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/weight_average.h"
#include "nn/zero.h"

namespace mlai::nn {

struct EvalResult {
  double loss = 0;
  io::ConfusionMatrix confusion{1};
  int64_t samples = 0;
  double top5 = -1;  // top-5 accuracy, measured when there are more than 5 classes
};

struct FitResult {
  std::string version_dir;  // empty for --fast-dev-run
  int64_t epochs_completed = 0;
  int64_t global_step = 0;
  double last_train_loss = 0;
  EvalResult val, test;
  int stop_signal = 0;         // non-zero when a signal ended training early
  bool early_stopped = false;  // --early-stopping-patience ended training before --epochs
  double lr_found = 0;         // --lr-find: the suggested learning rate (0: none)
  std::string limit;           // "max_steps" or "max_time" when that limit ended training
  double loss_scale = 1;       // --precision 16: the scale after the last epoch
  int64_t skipped_steps = 0;   // --precision 16: optimizer steps skipped for inf/nan gradients
  // The floating-point work of one training sample's matrix products, forward and backward, as
  // autograd counted it at the last eager step (torch's FlopCounterMode's count; 0: no step
  // ran), and the last epoch's rate per device in TFLOP/s and its share of the device's peak
  // (0: the peak is not known; see nn/throughput.h).
  double flops_per_sample = 0, tflops_per_device = 0, mfu = 0;
};

// --lr-find's suggestion, as Lightning's: over losses[skip_begin : size - skip_end] that are
// finite, the index (into `losses`) of the most negative gradient (torch.gradient: one-sided at
// the ends, central inside); -1 when fewer than 2 points remain.
int64_t steepest_descent(const std::vector<double>& losses, int64_t skip_begin, int64_t skip_end);

// --class-weights: the weights per class, from "W0,W1,..." (one per class of `train`) or
// "balanced" (n / (classes x count_c) over train's labels); errors name the flag.
std::vector<double> class_weight_values(const std::string& spec, const io::Dataset& train);

// A confusion matrix as JSON rows (metrics.csv's *_confusion cells).
std::string confusion_json(const io::ConfusionMatrix& cm);
// With more classes than this the terminal shows top-5 accuracy and a test or validation report
// goes to a file (metrics.csv and TensorBoard have top-5 from 6 classes on).
constexpr int kManyClasses = 20;

// What to try when the data loader holds training up (Lightning warns of too few DataLoader
// workers): `wait_fraction` of an epoch's training time went to waiting for batches, with
// `workers` loader threads on a rank that may use `cpus` CPUs, reading `dataset` (`cached`:
// --cache); `worker_augment`: the --auto-augment policy where the workers run it (the CPU
// backend; on a GPU it is a kernel), "none" or "" otherwise. "" when the wait is under 10% or
// nothing is left to try.
std::string loader_hint(double wait_fraction, int workers, int cpus, const std::string& dataset,
                        bool cached, const std::string& worker_augment = "");

// Installs handlers for SIGINT, SIGTERM and SIGUSR1 that ask fit() to stop after the
// current step (a second SIGINT kills the process at once).
void install_stop_handlers();

// --shard-size as a number of ranks, a divisor of the world size (trainer_parallel.cpp).
// Collective: every rank reaches the same answer, or the same one-line error.
int resolve_shard_size(const Config& cfg, const dist::ProcessGroup& g);

// --async-checkpoint: a checkpoint's write in flight on its own thread (trainer_checkpoint.cpp).
// `tmp` and `target`: a sharded checkpoint's directory, put in place once every rank's shard
// is written; `then`: what waits for it to be in place (best.h5's link). Joined when destroyed.
struct PendingCheckpoint {
  std::thread thread;
  std::exception_ptr error;
  std::string tmp, target;
  std::vector<std::function<void()>> then;
  ~PendingCheckpoint() {
    if (thread.joinable()) thread.join();
  }
};

class Trainer {
 public:
  explicit Trainer(Config cfg, std::string command_line = "",
                   dist::ProcessGroup& group = dist::ProcessGroup::get());
  ~Trainer();
  FitResult fit();
  Module& model() { return *model_; }
  Optimizer& optimizer() { return *opt_; }
  const io::DataSplits& data() const { return data_; }
  // --strategy zero1/zero2/zero3 on more than one rank (null otherwise).
  const ZeroRedundancy* zero() const { return zero_.get(); }
  ZeroRedundancy* zero() { return zero_.get(); }
  // --ema-decay's or --swa-lrs's average (null without either).
  WeightAverage* weight_average() { return ema_ ? ema_.get() : swa_.get(); }

 private:
  EvalResult evaluate(const io::Dataset& ds, int64_t max_batches);
  // --mixup-alpha/--cutmix-alpha: a training batch's images mixed with the batch rolled by one
  // sample, and its loss against the mixed labels (plain cross-entropy when mixing is off).
  struct Mixed {
    Tensor images, rolled_labels;
    double lambda = 1.0;
  };
  Mixed mix(const io::Batch& b, int64_t epoch, int64_t index);
  autograd::Variable training_loss(const autograd::Variable& logits, const Tensor& labels,
                                   const Mixed& m) const;

  // Sums a device tensor over ranks (no-op for one rank).
  void allreduce(Tensor& t);
  // The signal any rank received; else -1 when time_up on any rank (--max-time); else 0.
  int stop_requested(bool time_up = false);

  Config cfg_;
  std::string command_line_;
  dist::ProcessGroup& group_;
  bool main_;  // rank 0: prints, logs, checkpoints
  tensor::Device device_;
  io::DataSplits data_;
  std::shared_ptr<Module> model_;
  std::unique_ptr<Optimizer> opt_;
  // --class-weights, on the device (undefined values: none); weights() for the loss.
  autograd::ClassWeights class_weights_;
  const autograd::ClassWeights* weights() const {
    return class_weights_.values.defined() ? &class_weights_ : nullptr;
  }
  Precision precision_ = Precision::kFloat32;
  std::unique_ptr<GradScaler> scaler_;
  std::unique_ptr<GraphedStep> graphed_;  // --cuda-graphs
  Tensor graphed_grad_sq_;                 // --cuda-graphs --log-grad-norm: the graph's output
  std::unique_ptr<WeightAverage> ema_;     // --ema-decay
  std::optional<DeviceStatsMonitor> device_stats_;  // --log-device-stats
  std::unique_ptr<WeightAverage> swa_;     // --swa-lrs: the equal average of epochs' weights
  // --swa-lrs after the last epoch: the model takes the average, batch-norm statistics are
  // recomputed over the training data (`loader`, its pass `epoch`), and it is validated.
  void finish_swa(io::Loader& loader, int64_t epoch, int64_t val_limit, FitResult& res);
  // A weight average (ema_ or swa_) swapped with the model's weights, or copied into them, on
  // every rank. Under ZeRO the average is sharded as the optimizer state is (each rank keeps
  // its own parameters' average, WeightAverage's keep flags): each owner changes its own
  // parameters, which reach the others as a step's do (zero1/zero2's broadcasts; zero3's units
  // gather them when next used).
  void swap_average(WeightAverage& avg);
  void copy_average(WeightAverage& avg);
  // save()'s write: every rank takes part (ZeRO gathers to rank 0), rank 0 writes; under
  // --state-dict-type sharded each rank of rank 0's shard group writes its own file of the
  // checkpoint's directory (trainer_checkpoint.cpp).
  // weights_only (--save-weights-only): no optimizer state, nor a weight average's tensors
  // beside the weights.
  void write_checkpoint(const std::string& name, bool weights_only);
  void write_sharded_checkpoint(const std::string& name, bool weights_only);
  // One file of a checkpoint (the whole one, or this rank's shard), written now or, under
  // --async-checkpoint, handed to a thread; then put in place of swap_to ("": nothing to swap).
  void write_checkpoint_file(const std::string& file, bool weights_only,
                             const CheckpointShard* shard, const std::string& swap_to);
  // --async-checkpoint: the write in flight (one at most). finish_checkpoint_write() waits for
  // it and puts it in place (a sharded one after a barrier: every rank calls it at the same
  // points), then runs what waited for it; it rethrows the write's error. after_checkpoint_
  // write(f): f now, or once the write in flight is in place.
  std::unique_ptr<PendingCheckpoint> pending_checkpoint_;
  void start_checkpoint_write(std::shared_ptr<const CheckpointImage> image, std::string file,
                              std::string swap_to);
  void finish_checkpoint_write();
  void after_checkpoint_write(std::function<void()> f);
  std::string checkpoint_dir_;  // DIR/checkpoints on every rank (sharded checkpoints)
  std::unique_ptr<dist::Communicator> comm_;
  // Hybrid sharding (--shard-size below the world size): the ranks of this rank's shard group,
  // which ZeRO shards the model over, and the ranks holding the same shard in the other groups.
  std::unique_ptr<dist::Communicator> shard_comm_, replica_comm_;
  int shard_size_ = 1;  // ranks in a shard group (the world size without hybrid sharding)
  // The communicator ZeRO shards over: the shard group's, or the job's.
  dist::Communicator& shard_comm() { return shard_comm_ ? *shard_comm_ : *comm_; }
  std::unique_ptr<dist::Reducer> reducer_;
  std::unique_ptr<ZeroRedundancy> zero_;  // --strategy zero1 on more than one rank
  // The optimizer step (scaled_step: loss scaling, clipping), then under ZeRO the owners'
  // updated parameters to every rank.
  void take_step(float grad_scale, int64_t global_step, Tensor* grad_sq = nullptr);
  // (Re)builds the reducer over the parameters that require gradients now.
  void build_reducer();
  // Under mpirun/srun (trainer_parallel.cpp): the communicators, rank 0's weights on every
  // rank, ZeRO, the reducer and SyncBatchNorm.
  void setup_data_parallel();
  // --freeze-backbone / --unfreeze-backbone-at-epoch: the parameters frozen now (empty: none).
  std::vector<std::string> frozen_;
  // --unfreeze-backbone-at-epoch, as an epoch starts from its beginning (`lr`: the head's rate
  // for the epoch's first step): the unfreeze, with the backbone's own parameter group, or
  // that group's rate for this epoch.
  void finetune_epoch_start(int64_t epoch, double lr);
  // trainer_setup.cpp: resumed on another geometry (resumed_geometry_),
  // the schedule's step for the point of training the checkpoint reached, in this run's steps
  // (state_.schedule_shift), and a line saying where the epoch continues.
  // The run's epochs, where each starts in optimizer steps (the last entry: their total), and
  // the learning-rate schedule over them (trainer_setup.cpp).
  struct StepPlan {
    int64_t epochs = 0;
    std::vector<int64_t> epoch_starts;
    ScheduleConfig schedule;
  };
  StepPlan plan_steps(int64_t steps_per_epoch, int64_t max_steps, bool dev_run) const;
  void reanchor_schedule(const io::Loader& loader, const ScheduleConfig& sc, int64_t epoch_start);
  // One epoch's training totals on this rank, for end_epoch().
  struct EpochTotals {
    int64_t epoch, epochs;
    Tensor loss_sum, counts;  // over this rank's batches, on the device
    int64_t samples;
    double wait_before;  // the profiler's "data wait" total when the epoch began
    double lr;           // the last step's learning rate
    std::chrono::steady_clock::time_point start;
    bool val_epoch;  // --check-val-every-n-epoch: this epoch validates
    // Training ends with this epoch (its last, or --max-steps/--max-time/early stopping).
    bool last = false;
    // Batches run when training ended before the epoch's end (-1: the epoch ran to its end),
    // of `batches`; last.h5 then resumes at the next one.
    int64_t stopped_at = -1, batches = 0;
    // The validation already run at the step training ended on (within the epoch).
    std::optional<EvalResult> val_now;
  };
  // trainer_trace.cpp, --profiler-trace (steps: START, END): at the top of each batch, starts
  // recording when the step START begins, ends it once END is reached, and times the batch as
  // `span`; end_trace() gathers every rank's events into the run's trace.json (collective; with
  // nothing recorded, rank 0 says so).
  void trace_at_step(std::pair<int64_t, int64_t> steps, int64_t batch, int64_t accum,
                     std::optional<trace::Span>& span);
  void end_trace(std::pair<int64_t, int64_t> steps);
  bool trace_written_ = false;
  // trainer_report.cpp: logs, validation, the end of an epoch, the test.
  static io::ConfusionMatrix to_matrix(const Tensor& counts, const io::Dataset& ds);
  // checkpoints/<name> (rank 0, not --fast-dev-run). resumable: the whole state even under
  // --save-weights-only (a signal's last.h5, which a requeued job resumes from).
  void save(const std::string& name, bool resumable = false);
  void open_logs(FitResult& res);
  // hparams.json (settings, machine, data sizes, and `extra`) and TensorBoard's HPARAMS entry.
  void write_hparams(const nlohmann::json& extra);
  // --log-images: the first images of a training batch as one grid picture (rank 0).
  void log_images(const Tensor& images);
  // --log-per-class: <split>/recall/<class> and <split>/precision/<class> (rank 0).
  void log_per_class(const io::ConfusionMatrix& cm, const std::string& split);
  // trainer_lr_find.cpp: Lightning's learning-rate range test (Tuner.lr_find); returns the
  // suggested rate (0: none) and leaves the model, optimizer and scaler as they were.
  double lr_find(const io::LoaderOptions& lo, nlohmann::json& record);
  // What a tuner's trial steps change (weights, buffers, optimizer and scaler state, step
  // count, rate, dropout generators), copied so that restore() puts it back exactly.
  struct Snapshot {
    std::vector<std::pair<Tensor*, Tensor>> tensors;
    int64_t opt_steps = 0;
    double lr = 0;
    std::vector<std::pair<Generator*, std::pair<uint64_t, uint64_t>>> generators;
  };
  Snapshot snapshot();
  void restore(const Snapshot& s);
  // trainer_batch_find.cpp: Lightning's Tuner.scale_batch_size (--scale-batch-size power or
  // binsearch): the largest batch size whose training steps fit in memory; leaves the model,
  // optimizer and scaler as they were.
  int64_t scale_batch_size(const io::LoaderOptions& lo, nlohmann::json& record);
  // trainer_setup.cpp: the training loader's options from the configuration and the data.
  io::LoaderOptions train_loader_options() const;
  bool batch_size_found_ = false;  // resumed from a run whose --scale-batch-size set it
  bool loader_hint_shown_ = false;  // loader_hint() is printed once a run
  void print_header(int64_t steps_per_epoch, int64_t epochs);
  // true: early stopping ends training here (v: the validation's result)
  bool validate_within_epoch(int64_t epoch, int64_t b, int64_t val_limit, EvalResult& v);
  bool end_epoch(EpochTotals& e, int64_t val_limit, FitResult& res);  // true: stop early
  // Lightning's ModelCheckpoint after a validation (score: --checkpoint-monitor's value):
  // best.h5 when it improves, and the --save-top-k files.
  void keep_if_best(double score, int64_t epoch);
  // Lightning's EarlyStopping after a validation: true when training should stop (a value
  // that is not finite, a threshold passed, patience run out), the reason in early_stop_reason_.
  bool early_stopping_update(const EvalResult& v);
  std::string early_stop_reason_;
  // --min-epochs/--min-steps: whether an early stop asked for now (`requested`) or earlier
  // happens now, with `epochs_done` epochs complete; one line says when it is put off.
  bool early_stop_due(bool requested, int64_t epochs_done);
  double train_seconds() const;  // over every resume (--max-time)
  // --test-ckpt best or FILE (last: nothing to load); `verb` ("testing") starts its line.
  void load_test_weights(const char* verb);
  // Gives every rank rank 0's parameters and buffers (and with `training`, its optimizer and
  // loss-scaler state), then refreshes the working copies. A no-op on one process.
  void sync_from_rank0(bool training);
  void test_and_report(FitResult& res);
  // --validate-only (Lightning's trainer.validate): --test-ckpt's weights on the validation split.
  void validate_and_report(FitResult& res);
  // Prints, writes to metrics.csv and logs to TensorBoard a test's (`test`) or validation's
  // metrics, and ends the HParams session.
  void report_evaluation(const EvalResult& r, bool test);
  // The profiler's report (rank 0) and profile.json in the run's directory; under data
  // parallelism each action's total on the fastest and the slowest rank too (collective: every
  // rank calls it).
  void report_profile(double wall_seconds);

  Profiler profiler_;
  std::string dir_;
  bool dev_run_ = false;
  std::unique_ptr<io::CsvLogger> csv_;  // rank 0, not --fast-dev-run
  std::unique_ptr<io::EventWriter> tb_;
  TrainState state_;
  std::chrono::steady_clock::time_point fit_clock_;  // when this fit() began training
  double seconds_before_ = 0;                        // training seconds of earlier runs
  // --checkpoint-train-time-interval in seconds (0: off), and when last.h5 was last written.
  double checkpoint_interval_ = 0;
  std::chrono::steady_clock::time_point last_saved_;
  // Throughput (Lightning's ThroughputMonitor): the FLOPs of one training sample, from the
  // last step that ran eagerly (graph replays count none), and the device's dense peak FLOP/s
  // for this run's precision (0: not known, as on CPUs).
  double flops_per_sample_ = 0, peak_flops_ = 0;
  ModuleFlops module_flops_;  // the summary's FLOPs column: one sample's forward (rank 0)
  bool checkpoint_due() const;
  bool lr_find_done_ = false;  // resumed from a run whose --lr-find already set the rate
  // Resumed from a run on another number of ranks, batch size or accumulation count: its ranks,
  // batch size and --accumulate-grad-batches (ranks 0: the same as this run's, or not resumed).
  std::tuple<int64_t, int64_t, int64_t> resumed_geometry_{0, 0, 1};
};

}  // namespace mlai::nn
