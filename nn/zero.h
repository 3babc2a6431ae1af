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
  // (it never holds the others' state). Each owner's parameters (and their fp16/bf16 working
  // copies) move into one flat buffer per owner, as views, so that one broadcast from each
  // owner (and one cast per owner for the working copies) refreshes them all. Call it once
  // every rank holds the same parameters (after the broadcast from rank 0).
  ZeroRedundancy(Optimizer& opt, dist::Communicator& comm);

  // After each optimizer step, on every rank: the owners' parameters reach the other ranks.
  void broadcast_parameters();

  // Collective (checkpoints): rank 0's optimizer gets the state of every parameter from its
  // owner, in place of the freed tensors; release() frees what gather() added.
  void gather_state();
  void release_state();

  int owner(size_t i) const { return owner_[i]; }
  // The state one process would keep (bytes); Optimizer::state_bytes() is this rank's.
  int64_t total_state_bytes() const;

 private:
  Optimizer& opt_;
  dist::Communicator& comm_;
  std::vector<int> owner_;
  std::vector<int64_t> offset_;       // parameter i's place in its owner's buffers
  std::vector<Tensor> flat_;          // per rank: its parameters (float32)
  std::vector<Tensor> flat_working_;  // per rank: their working copies (undefined: none)
  bool gathered_ = false;
};

// Holds the whole optimizer state on rank 0 while it lives (a checkpoint's write); nothing
// without ZeRO. Every rank must make one at the same point.
class GatheredState {
 public:
  explicit GatheredState(ZeroRedundancy* zero) : zero_(zero) {
    if (zero_) zero_->gather_state();
  }
  ~GatheredState() {
    if (zero_) zero_->release_state();
  }
  GatheredState(const GatheredState&) = delete;
  GatheredState& operator=(const GatheredState&) = delete;

 private:
  ZeroRedundancy* zero_;
};

}  // namespace mlai::nn
