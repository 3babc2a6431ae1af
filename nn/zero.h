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
// master (a checkpoint's write, weight histograms) gathers them for the while (WholeMasters);
// training's end gathers them for good (unshard_masters()).
#pragma once

#include <cstdint>
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

class ZeroRedundancy {
 public:
  // For an optimizer made with OptimizerConfig::owned = owned_parameters(...) of this rank
  // (it never holds the others' state). Each owner's parameters move into flat buffers per
  // owner, as views, so that one broadcast from each owner refreshes them all: those without
  // a working copy in one (float32), the masters of those with one in another, and the working
  // copies (fp16/bf16) in a third. With shard_masters, the masters of the parameters other
  // ranks own are released: broadcasts then carry the working copies. Call it once every rank
  // holds the same parameters (after the broadcast from rank 0).
  ZeroRedundancy(Optimizer& opt, dist::Communicator& comm, bool shard_masters = true);

  // After each optimizer step, on every rank: the owners' parameters reach the other ranks
  // (sharded masters: their working copies; else the masters, which the others round).
  void broadcast_parameters();

  // Collective (checkpoints): rank 0's optimizer gets the state of every parameter from its
  // owner, in place of the freed tensors; release() frees what gather() added.
  void gather_state();
  void release_state();

  // Collective: every rank gets every float32 master from its owner (nothing to do unless
  // they are sharded); release_masters() gives back the others' memory. Calls nest.
  void gather_masters();
  void release_masters();
  // Collective: the masters gathered for good, and broadcast whole from now on (the end of
  // training, or before the weights are loaded anew). Cannot be undone.
  void unshard_masters();
  bool masters_sharded() const { return shard_masters_; }

  int owner(size_t i) const { return owner_[i]; }
  // The state one process would keep (bytes); Optimizer::state_bytes() is this rank's.
  int64_t total_state_bytes() const;
  // Bytes of float32 parameters (masters and those without working copies) this rank holds
  // now, and that every rank holds unsharded.
  int64_t master_bytes() const;
  int64_t total_master_bytes() const;

 private:
  Optimizer& opt_;
  dist::Communicator& comm_;
  std::vector<int> owner_;
  std::vector<int64_t> offset_;  // parameter i's place in its owner's buffers
  // Per rank: its parameters without working copies (float32), the masters of those with one
  // and the working copies themselves (undefined: none of that kind).
  std::vector<Tensor> plain_, masters_, working_;
  bool shard_masters_ = false;
  int masters_gathered_ = 0;  // nesting depth of gather_masters()
  bool gathered_ = false;
};

// Every float32 master on every rank while it lives (sharded masters, see above); nothing
// otherwise. Collective: every rank makes one at the same point.
class WholeMasters {
 public:
  explicit WholeMasters(ZeroRedundancy* zero) : zero_(zero) {
    if (zero_) zero_->gather_masters();
  }
  ~WholeMasters() {
    if (zero_) zero_->release_masters();
  }
  WholeMasters(const WholeMasters&) = delete;
  WholeMasters& operator=(const WholeMasters&) = delete;

 private:
  ZeroRedundancy* zero_;
};

// Holds the whole optimizer state on rank 0 while it lives, and every master (a checkpoint's
// write); nothing without ZeRO. Every rank must make one at the same point.
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
