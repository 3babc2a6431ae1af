// Checkpoints in HDF5: model parameters and buffers by name (group "model"), optimizer state
// ("optimizer"), layer generators ("rng"), and as root attributes the epoch, step, position in
// the epoch, best validation accuracy and the full config (JSON). Written to a temporary file
// and renamed, so a crash never leaves a broken checkpoint. Every reader here also takes a
// sharded checkpoint's directory (nn/checkpoint_shards.h).
#pragma once

#include <limits>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "nn/checkpoint_shards.h"
#include "nn/config.h"
#include "nn/lr_schedule.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace mlai::nn {

struct TrainState {
  int64_t epoch = 0;        // the epoch in progress (0-based) or the next one to run
  int64_t next_batch = 0;   // first batch of `epoch` still to run (0: start of the epoch)
  int64_t global_step = 0;  // optimizer steps taken
  // The same position as samples of the epoch's order trained on, all ranks together (-1: not
  // recorded, an older checkpoint), with the ranks that wrote it (0: not recorded): a run
  // resumed on another number of ranks or batch size continues the epoch from there.
  int64_t epoch_samples = -1;
  int64_t world = 0;
  // Added to global_step to give the learning-rate schedule's step: 0 unless a resume changed
  // the steps an epoch takes (another number of ranks or batch size), when the schedule is
  // re-anchored to the same point of training in the new steps.
  int64_t schedule_shift = 0;
  // ModelCheckpoint: the best value of --checkpoint-monitor so far (NaN: none yet; what
  // best.h5 holds) and, with --save-top-k other than 1, the kept checkpoints' values and file
  // names (in checkpoints/).
  double best_score = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::pair<double, std::string>> top_k;
  std::string checkpoint_dir;  // where best.h5 and the top-k files were written
  // Early stopping: the best monitored value so far (NaN: none yet) and the epochs since.
  double early_stopping_best = std::numeric_limits<double>::quiet_NaN();
  int64_t early_stopping_wait = 0;
  // An early stop asked for while --min-epochs/--min-steps were not yet reached: it happens
  // once they are (sticky, as Lightning's trainer.should_stop).
  bool early_stopping_pending = false;
  // Seconds of training so far, over every resume (what --max-time counts, like Lightning's
  // Timer state in its checkpoints).
  double train_seconds = 0;
  // --lr-schedule plateau: ReduceLROnPlateau's state (the current rate among it).
  PlateauState plateau;
  // --ema-decay: the updates the weight average has had (AveragedModel's n_averaged).
  int64_t ema_updates = 0;
  // --swa-lrs: epochs averaged, the epoch of the last update (-1: none), and whether the end of
  // SWA (the model taking the average, batch-norm statistics recomputed) has happened.
  int64_t swa_updates = 0;
  int64_t swa_latest_epoch = -1;
  bool swa_done = false;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor*>>;

// What the model was trained on, for running it on new images (mlai_predict): the input size,
// the normalization of the training set, and the class names. Root attribute "data" (JSON).
struct DataInfo {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<float> mean, std;
  std::vector<std::string> class_names;
};

// amp: the loss scaler's state (GradScaler::state()), saved in group "amp" when non-empty.
// data: saved when given. current: under weight averaging (--ema-decay) `model` holds the
// average, which group "model" gets (what the test, mlai_predict and exports use, as in
// Lightning's WeightAveraging), and `current` the weights training goes on with, saved in group
// A checkpoint's contents copied to host memory at a save, written later (--async-checkpoint:
// training goes on meanwhile). write() and set_attr() are io::H5Writer's calls; only the root's
// attributes are kept.
class CheckpointImage {
 public:
  void write(const std::string& name, io::H5Type dtype, const std::vector<int64_t>& shape,
             const void* data);
  void set_attr(const std::string&, const std::string& key, const std::string& value) {
    attrs_.emplace_back(key, value);
  }
  void set_attr(const std::string& o, const std::string& key, const char* value) {
    set_attr(o, key, std::string(value));
  }
  void set_attr(const std::string&, const std::string& key, double value) {
    attrs_.emplace_back(key, value);
  }
  template <std::integral T>
  void set_attr(const std::string&, const std::string& key, T value) {
    attrs_.emplace_back(key, static_cast<int64_t>(value));
  }
  // Writes the file (under a temporary name, renamed once complete); thread-safe (HDF5 calls
  // take io's lock).
  void save(const std::string& path) const;
  int64_t bytes() const { return bytes_; }

 private:
  struct Dataset {
    std::string name;
    io::H5Type dtype;
    std::vector<int64_t> shape;
    std::vector<char> bytes;
  };
  std::vector<Dataset> datasets_;
  std::vector<std::pair<std::string, std::variant<std::string, int64_t, double>>> attrs_;
  int64_t bytes_ = 0;
};

// "current_model" (load_current_model). shard: one file of a sharded checkpoint, holding the
// tensors shard->keep names (and, for shard 0, the attributes), in place of the whole file.
// snapshot: the contents are copied into it (to be saved later) and nothing is written.
void save_checkpoint(const std::string& path, Module& model, Optimizer* opt,
                     const TrainState& state, const Config& cfg, const NamedTensors& amp = {},
                     const DataInfo* data = nullptr, const NamedTensors& current = {},
                     const NamedTensors& swa = {}, const CheckpointShard* shard = nullptr,
                     CheckpointImage* snapshot = nullptr);

// Reads group `group` ("swa_average": --swa-lrs's average) into `into` by name; false, with
// nothing read, when the checkpoint has no such group. Names and shapes must match; undefined
// tensors in `into` (a sharded weight average's others) are not read.
bool load_group(const std::string& path, const std::string& group, const NamedTensors& into);

// Reads group "current_model" into `model` (same names and shapes as its "model" group);
// false, with nothing read, when the checkpoint has none (it was not saved with --ema-decay).
bool load_current_model(const std::string& path, Module& model);

// Loads the parameters and buffers of group "model" into `model`, except the names in `skip`
// (neither required in the file nor in the model, and not loaded). Names and shapes must match
// otherwise: one error lists what is missing, unexpected and mis-shaped. Used by --pretrained.
void load_weights(const std::string& path, Module& model, const std::set<std::string>& skip);

// Loads into `model` (and `opt` when given). Parameter and buffer names and shapes must match:
// otherwise one error lists what is missing, unexpected and mis-shaped.
// amp: loaded when the file has it (a float32 run's checkpoint has none).
TrainState load_checkpoint(const std::string& path, Module& model, Optimizer* opt,
                           const NamedTensors& amp = {});
// The config stored in a checkpoint.
Config checkpoint_config(const std::string& path);
// The DataInfo stored in a checkpoint (false: none, as in files from before it was kept).
bool checkpoint_data(const std::string& path, DataInfo* out);

}  // namespace mlai::nn
