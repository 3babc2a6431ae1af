// ZeRO stage 1 (--strategy zero1): data parallelism with the optimizer state sharded over the
// ranks, as torch.distributed.optim.ZeroRedundancyOptimizer and DeepSpeed's stage 1 do it.
// Gradients are allreduced as under DDP; each rank then steps only the parameters it owns,
// keeping state (momentum, Adam's moments) for those alone, and each owner broadcasts its updated
// parameters to the others. The updates are those of plain DDP, bit for bit; the state takes
// 1/world of the memory on each rank. Checkpoints hold the whole state (gathered to rank 0 for
// the write), so a run resumes on any number of ranks, with or without ZeRO.
// Stage 2 (--strategy zero2) is this with the gradients sharded too: the reducer
// (dist/reducer.h, ReducerOptions::owner) sums each gradient only on its owner, by the same
// partition, and the optimizer reads only those (OptimizerConfig::sharded_gradients).
// Under mixed precision both stages shard the float32 masters too, as DeepSpeed's stages 1
// and 2 do: a rank keeps the masters of its own parameters only (the others' storage is
// released, tensor.h's Storage::release), and each owner broadcasts its updated fp16/bf16
// working copies, half the bytes of the masters. The working copies are the owner's rounding
// of the same masters, so the ranks still train as DDP does, bit for bit. Whatever needs every
// master (a checkpoint's write, weight histograms: rank 0 alone) gathers them to rank 0 for the
// while (MastersOnRank0); training's end gathers them everywhere for good (unshard()).
// Stage 3 (--strategy zero3, FSDP's FULL_SHARD, DeepSpeed's stage 3) shards the parameters
// too: between uses a rank holds only its own. The model is cut into units (each residual or
// encoder block, and the rest of the model as the root); a unit's parameters are gathered from
// their owners just before its forward and freed after it, gathered again when backward reaches
// the unit's output and freed once backward has passed its input (Module::ShardedUnit,
// autograd/hooks.h); evaluation gathers and frees them around each forward alone. Gradients are reduced to their owners as under stage 2; a step updates
// the owner's parameters and broadcasts nothing. As FSDP does, the root unit is not freed
// between its forward and its backward (backward would gather it again at once), and the next
// unit's gather starts before this one's is waited for (prefetching: FSDP's backward_prefetch
// BACKWARD_PRE by default, BACKWARD_POST, and forward_prefetch), in the order the previous step
// ran the units, so a unit's broadcasts travel while the one before it computes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "nn/optim.h"

namespace mlai::nn {

// Parameter i (of sizes[i] elements) goes to owner[i]: largest first, each to the rank with the
// fewest elements so far (the lowest rank on a tie), as ZeroRedundancyOptimizer partitions.
std::vector<int> partition_parameters(const std::vector<int64_t>& sizes, int world);
// Whether `rank` owns each of the parameters (OptimizerConfig::owned).
std::vector<bool> owned_parameters(const std::vector<std::pair<std::string, Variable>>& params,
                                   int rank, int world);

// FSDP's BackwardPrefetch: in backward, the next unit's gather starts when this unit's starts
// (kPre, FSDP's default: more overlap, one more unit held), once this unit's gradients are
// done (kPost), or not before it is needed (kNone).
enum class BackwardPrefetch { kNone, kPre, kPost };
BackwardPrefetch parse_backward_prefetch(const std::string& name);  // backward_pre|_post|none

struct ZeroOptions {
  // Stage 3 (--strategy zero3): unit_of[i], the unit (FSDP's wrapped module) parameter i
  // belongs to, 0 .. units-1. Non-empty: the parameters themselves are sharded, each unit's
  // gathered around its forward and its backward (gather_unit/release_unit).
  std::vector<int> unit_of;
  // Stage 3's prefetching (above): at most one unit gathered ahead of its use.
  BackwardPrefetch backward_prefetch = BackwardPrefetch::kPre;
  bool forward_prefetch = false;
  // Hybrid sharding (--shard-size): the communicator given is one shard group's, and every
  // group holds the whole model. Only the group of the job's rank 0 (which writes checkpoints)
  // gathers for a write or for what rank 0 reads; in the others gather_state, gather_to_rank0
  // and gather_masters do nothing.
  bool gathers_to_rank0 = true;
};

// Stage 3's units, FSDP's auto-wrap policy for these models: each residual or encoder block
// (as --activation-checkpointing finds them) is one, and the model with whatever is outside
// them (a ResNet's stem and head, the whole mlp) is the root, unit 0. Returns the units'
// modules by index and fills unit_of (parallel to model.named_parameters()).
std::vector<Module*> sharding_units(Module& model, std::vector<int>& unit_of);

class ZeroRedundancy {
 public:
  // For an optimizer made with OptimizerConfig::owned = owned_parameters(...) of this rank
  // (it never holds the others' state). Each owner's parameters move into flat buffers, as
  // views: per owner (and per unit under stage 3) one for those without a working copy
  // (float32), one for the masters of those with one, one for the working copies (fp16/bf16).
  // One broadcast from each owner then refreshes a whole buffer. Released buffers keep their
  // views' shapes (tensor.h's Storage::release). Call it once every rank holds the same
  // parameters (after the broadcast from rank 0).
  ZeroRedundancy(Optimizer& opt, dist::Communicator& comm, ZeroOptions options = {});

  // After each optimizer step, on every rank: the owners' parameters reach the other ranks
  // (sharded masters: their working copies; else the masters, which the others round). Under
  // stage 3 nothing: the next forward gathers what it needs.
  void broadcast_parameters();

  // Collective (checkpoints): rank 0's optimizer gets the state of every parameter from its
  // owner, on the host, in place of the freed tensors; the other ranks send theirs and hold
  // nothing more. release() frees what gather() added.
  void gather_state();
  void release_state();
  // Collective (a checkpoint's write): per_param[i] (parallel to the optimizer's parameters,
  // float32 in parameter i's shape) is a tensor its owner alone keeps, as a sharded weight
  // average's (nn/weight_average.h); rank 0 receives the other owners' on the host in their
  // place, the other ranks send theirs. Rank 0 drops them after the write.
  void gather_to_rank0(const std::vector<Tensor*>& per_param);

  // Collective (what rank 0 alone reads: a checkpoint's write, weight histograms): rank 0's
  // parameters all hold their float32 values, the sharded ones as host copies received from
  // their owners in their place, one owner's buffer at a time on the device (FSDP's
  // FULL_STATE_DICT with rank0_only and offload_to_cpu); the other ranks send what they own
  // and hold nothing more. Covers the float32 masters and, under stage 3, the parameters
  // without a working copy; nothing to do unless they are sharded. release_masters() puts
  // rank 0's own views back. Calls nest. Nothing may step or run the model in between.
  void gather_masters();
  void release_masters();
  // Collective: everything gathered for good (masters, and under stage 3 the parameters too),
  // and broadcast whole after each step from now on (the end of training, or before the
  // weights are loaded anew). Cannot be undone.
  void unshard();
  bool masters_sharded() const { return masters_sharded_ && !whole_; }
  bool parameters_sharded() const { return units_ > 0 && !whole_; }

  // Stage 3. gather_unit is collective (each owner broadcasts the unit's parameters it holds:
  // its working copies, and those without one, all at once); release_unit gives the others'
  // memory back, with no communication. Each is idempotent while the unit is gathered or
  // released. `backward`: called from the unit's backward hooks (module.cpp's unit_forward),
  // which record the order units run in and prefetch by it; the root's release after its
  // forward keeps it for backward.
  int unit_count() const { return units_; }
  void gather_unit(int u, bool backward = false);
  void release_unit(int u, bool backward = false);
  bool unit_held(int u) const { return unit_held_[static_cast<size_t>(u)]; }
  // After a backward (or an evaluation), whatever it left gathered (the root, units with
  // frozen parameters, a prefetch the order did not use); after a backward this also ends the
  // step's record of the units' order.
  void release_units();
  // The most units held at once by gather_unit and prefetching: FSDP's root and one block, or
  // two while the next one is prefetched; never the model.
  int peak_units_held() const { return peak_held_; }
  // Units gathered ahead of their use, and how many of those a gather_unit then found there.
  int64_t prefetches() const { return prefetches_; }
  int64_t prefetch_hits() const { return prefetch_hits_; }

  int owner(size_t i) const { return owner_[i]; }
  // The state one process would keep (bytes); Optimizer::state_bytes() is this rank's.
  int64_t total_state_bytes() const;
  // Bytes of float32 parameters (masters and those without working copies) this rank holds
  // now, and that every rank holds unsharded.
  int64_t master_bytes() const;
  int64_t total_master_bytes() const;
  // Bytes of what forward computes with (working copies, and parameters without one) this
  // rank holds now, and all of it.
  int64_t parameter_bytes() const;
  int64_t total_parameter_bytes() const;

 private:
  // The broadcasts that fill some buffers, posted as one (Communicator::broadcast_many_async),
  // waited for once by whichever of them is settled first.
  struct Pending {
    std::unique_ptr<dist::Work> work;
    void wait() {
      if (work) work->wait();
      work.reset();
    }
  };
  // One flat buffer of one owner's parameters. Sharded: on the other ranks its storage is
  // released unless something holds it (holds counts the same on every rank, so every rank
  // takes part in the broadcast that fills it). `pending`: that broadcast, until waited for.
  struct Shard {
    Tensor t;
    int root = 0;
    bool sharded = false;
    int holds = 0;
    std::shared_ptr<Pending> pending;
  };
  // acquire() starts the broadcasts that fill the buffers not held yet, all owners' at once;
  // settle() waits for a buffer's (every acquire is settled before the buffer is read). drop()
  // settles before releasing.
  void acquire(const std::vector<Shard*>& shards);
  static void settle(Shard& s);
  void drop(Shard& s);
  // Stage 3: a unit's buffers acquired (held from now on) or settled; release without the
  // root's exception.
  void post_unit(int u);
  void settle_unit(int u);
  // f(shard) for each of unit u's buffers that forward reads (plain and working copies).
  template <class F>
  void for_unit_shards(int u, F f);
  void release(int u);
  void prefetch(int u);
  // gather_state and gather_to_rank0: *of(i, slot) for slot < slots of every parameter i, from
  // its owner to rank 0 (host copies there), each owner's packed in one message.
  void send_to_rank0(size_t slots, const std::function<Tensor*(size_t, size_t)>& of);
  // Bytes of one kind of buffer: those held here now, or all of them.
  int64_t bytes(const std::vector<Shard>& kind, bool held_only) const;

  Optimizer& opt_;
  dist::Communicator& comm_;
  std::vector<int> owner_;
  int units_ = 0;                // stage 3's units (0: stages 1 and 2)
  std::vector<size_t> segment_;  // parameter i's buffers: segment (unit * world + owner)
  std::vector<int64_t> offset_;  // parameter i's place in them
  std::vector<Shard> plain_, masters_, working_;  // per segment (undefined: none of that kind)
  std::vector<bool> unit_held_;
  std::vector<bool> prefetched_;  // held ahead of use, not yet claimed by gather_unit
  BackwardPrefetch backward_prefetch_ = BackwardPrefetch::kPre;
  bool forward_prefetch_ = false;
  bool gathers_to_rank0_ = true;  // (ZeroOptions::gathers_to_rank0)
  // The units' order in forward ([0]) and backward ([1]): the last step's, and this one's.
  std::vector<int> order_[2], seen_[2];
  int64_t prefetches_ = 0, prefetch_hits_ = 0;
  int peak_held_ = 0;
  bool masters_sharded_ = false;
  bool whole_ = false;
  int masters_gathered_ = 0;  // nesting depth of gather_masters()
  // Rank 0 inside gather_masters(): each parameter given a host copy, and its own view.
  std::vector<std::pair<size_t, Tensor>> offloaded_;
  bool gathered_ = false;
};

// Every float32 master on rank 0 while it lives (sharded masters, see above); nothing
// otherwise. Collective: every rank makes one at the same point.
class MastersOnRank0 {
 public:
  explicit MastersOnRank0(ZeroRedundancy* zero) : zero_(zero) {
    if (zero_) zero_->gather_masters();
  }
  ~MastersOnRank0() {
    if (zero_) zero_->release_masters();
  }
  MastersOnRank0(const MastersOnRank0&) = delete;
  MastersOnRank0& operator=(const MastersOnRank0&) = delete;

 private:
  ZeroRedundancy* zero_;
};

// Holds the whole optimizer state and every master on rank 0 while it lives (a checkpoint's
// write; the other ranks hold nothing more); nothing without ZeRO. Every rank must make one at
// the same point.
class GatheredState {
 public:
  explicit GatheredState(ZeroRedundancy* zero) : zero_(zero) {
    if (!zero_) return;
    zero_->gather_state();
    zero_->gather_masters();
  }
  ~GatheredState() {
    if (!zero_) return;
    zero_->release_masters();
    zero_->release_state();
  }
  GatheredState(const GatheredState&) = delete;
  GatheredState& operator=(const GatheredState&) = delete;

 private:
  ZeroRedundancy* zero_;
};

}  // namespace mlai::nn
