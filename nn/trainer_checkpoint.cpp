// The trainer's checkpoint writes (see trainer.h): save(), the full file that rank 0 writes
// after gathering every rank's share of a ZeRO state, and --state-dict-type sharded's
// directory, in which each rank writes the tensors it owns (nn/checkpoint_shards.h).
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nn/trainer.h"

namespace mlai::nn {

void Trainer::save(const std::string& name, bool resumable) {
  if (name == "last.h5") last_saved_ = std::chrono::steady_clock::now();  // (on every rank)
  if (dev_run_) return;
  Profiler::Scope timed(profiler_, "checkpoint");  // (every rank: ZeRO's gathers, the shards)
  // --ema-decay: the average as the weights, the training weights beside them (Lightning's
  // WeightAveraging).
  if (ema_) swap_average(*ema_);
  write_checkpoint(name, cfg_.save_weights_only && !resumable);
  if (ema_) swap_average(*ema_);
}

namespace {
// What a checkpoint keeps of a weight average beside the model: nothing for weights only.
NamedTensors beside_tensors(bool weights_only, WeightAverage* avg) {
  return weights_only || !avg ? NamedTensors{} : avg->named();
}

// A sharded weight average's other owners' tensors on rank 0 while it lives (a checkpoint's
// write); nothing without ZeRO. Every rank makes one at the same point.
class AverageOnRank0 {
 public:
  AverageOnRank0(ZeroRedundancy* zero, WeightAverage* avg, const Optimizer& opt)
      : avg_(zero ? avg : nullptr) {
    if (!avg_) return;
    std::map<std::string, Tensor*> by_name;
    for (const auto& [n, t] : avg_->named()) by_name[n] = t;
    std::vector<Tensor*> per_param;
    for (const auto& [n, v] : opt.parameters()) per_param.push_back(by_name.at(n));
    zero->gather_to_rank0(per_param);
  }
  ~AverageOnRank0() {
    if (avg_) avg_->drop_others();
  }
  AverageOnRank0(const AverageOnRank0&) = delete;
  AverageOnRank0& operator=(const AverageOnRank0&) = delete;

 private:
  WeightAverage* avg_;
};
}  // namespace

void Trainer::write_checkpoint(const std::string& name, bool weights_only) {
  finish_checkpoint_write();  // (--async-checkpoint: the previous one first)
  if (cfg_.state_dict_type == "sharded") return write_sharded_checkpoint(name, weights_only);
  // ZeRO: every rank calls save() at the same points; rank 0 holds the whole state meanwhile,
  // and the whole of what is saved beside the weights: the training weights under --ema-decay
  // (swapped out, save()), the average so far under --swa-lrs. Weights only: the masters.
  const GatheredState whole(weights_only ? nullptr : zero_.get());
  const MastersOnRank0 masters(weights_only ? zero_.get() : nullptr);
  WeightAverage* beside = weights_only ? nullptr : ema_ ? ema_.get() : swa_.get();
  const AverageOnRank0 average(zero_.get(), beside, *opt_);
  if (!main_) return;
  // (A sharded checkpoint of this name, from before a requeue that changed --state-dict-type,
  // is a directory: the file is swapped in for it.)
  const std::string path = checkpoint_dir_ + "/" + name;
  const bool over_directory = std::filesystem::is_directory(path);
  write_checkpoint_file(over_directory ? path + ".full" : path, weights_only, nullptr,
                        over_directory ? path : "");
}

void Trainer::write_checkpoint_file(const std::string& file, bool weights_only,
                                    const CheckpointShard* shard, const std::string& swap_to) {
  if (main_) {
    // The exact count of steps taken (the step loop knows it one step late).
    opt_->set_step_count(state_.global_step - scaler_->skipped_steps());
    state_.train_seconds = train_seconds();
    state_.checkpoint_dir = checkpoint_dir_;
  }
  const io::Dataset& d = data_.train;
  const DataInfo data{d.height, d.width, d.channels, d.mean, d.std, d.class_names};
  std::shared_ptr<CheckpointImage> image;
  if (cfg_.async_checkpoint) image = std::make_shared<CheckpointImage>();
  save_checkpoint(file, *model_, weights_only ? nullptr : opt_.get(), state_, cfg_,
                  scaler_->state(), &data, beside_tensors(weights_only, ema_.get()),
                  beside_tensors(weights_only, swa_.get()), shard, image.get());
  if (image)
    start_checkpoint_write(std::move(image), file, swap_to);
  else if (!swap_to.empty())
    replace_path(file, swap_to);
}

void Trainer::write_sharded_checkpoint(const std::string& name, bool weights_only) {
  // Every rank at the same point. Rank 0's group writes (under hybrid sharding every group
  // holds the whole state; the others wait), each rank its own shard, into NAME.tmp, which
  // rank 0 swaps into place once all shards are committed.
  const int shards = zero_ ? shard_size_ : 1;
  const int me = group_.rank();
  const std::string target = checkpoint_dir_ + "/" + name, tmp = target + ".tmp";
  if (main_) {
    std::filesystem::remove_all(tmp);
    std::filesystem::create_directories(tmp);
  }
  if (comm_) comm_->barrier();
  if (me < shards) {
    // Each parameter's tensors go with its owner (ZeRO's partition within the group: the
    // parameter itself, its optimizer state, its weight averages); everything else (buffers,
    // generators, the loss scaler) and the attributes with shard 0.
    std::map<std::string, int> owner;
    if (zero_) {
      const auto& params = opt_->parameters();
      for (size_t i = 0; i < params.size(); ++i)
        for (const char* group : {"model/", "current_model/", "swa_average/"})
          owner[group + params[i].first] = zero_->owner(i);
      const auto state = opt_->state();
      for (size_t k = 0; k < state.size(); ++k)
        owner["optimizer/" + state[k].first] = zero_->owner(k % params.size());
    }
    CheckpointShard shard{me, shards, [&](const std::string& n) {
                            const auto it = owner.find(n);
                            return it == owner.end() ? me == 0 : it->second == me;
                          }};
    write_checkpoint_file(tmp + "/" + shard_file_name(me, shards), weights_only, &shard, "");
  }
  if (cfg_.async_checkpoint) {  // (every rank: finish_checkpoint_write's barrier and swap)
    if (!pending_checkpoint_) pending_checkpoint_ = std::make_unique<PendingCheckpoint>();
    pending_checkpoint_->tmp = tmp;
    pending_checkpoint_->target = target;
    return;
  }
  if (comm_) comm_->barrier();  // (a rank whose write failed has ended the job)
  if (main_) replace_path(tmp, target);
}

void Trainer::start_checkpoint_write(std::shared_ptr<const CheckpointImage> image,
                                     std::string file, std::string swap_to) {
  pending_checkpoint_ = std::make_unique<PendingCheckpoint>();
  PendingCheckpoint* p = pending_checkpoint_.get();
  // MLAI_ASYNC_CHECKPOINT_DELAY_MS (tests): the write starts that much later, so training has
  // surely moved on from the state the image holds.
  const char* delay = std::getenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS");
  const int delay_ms = delay ? std::atoi(delay) : 0;
  p->thread = std::thread([p, image = std::move(image), file = std::move(file),
                           swap_to = std::move(swap_to), delay_ms] {
    try {
      if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      image->save(file);
      if (!swap_to.empty()) replace_path(file, swap_to);
    } catch (...) {
      p->error = std::current_exception();
    }
  });
}

void Trainer::finish_checkpoint_write() {
  if (!pending_checkpoint_) return;
  const std::unique_ptr<PendingCheckpoint> p = std::move(pending_checkpoint_);
  if (p->thread.joinable()) p->thread.join();
  if (p->error) std::rethrow_exception(p->error);
  if (!p->target.empty()) {  // a sharded checkpoint: every rank's shard written, then in place
    if (comm_) comm_->barrier();
    if (main_) replace_path(p->tmp, p->target);
  }
  for (const auto& f : p->then) f();
}

void Trainer::after_checkpoint_write(std::function<void()> f) {
  if (pending_checkpoint_)
    pending_checkpoint_->then.push_back(std::move(f));
  else
    f();
}

}  // namespace mlai::nn
