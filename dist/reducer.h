// Gradient bucketing for data parallelism, as PyTorch DDP does it. Gradients live in flat
// bucket buffers (each parameter's .grad is a view into one), filled in reverse registration
// order (the order backward produces them), about bucket_cap_mb each, the first one
// first_bucket_mb. When the last gradient of a bucket is final in backward (autograd leaf
// hooks), its allreduce starts at once, on the communication stream or as a non-blocking MPI
// request, so communication overlaps the rest of backward. Buckets start in index order on
// every rank (a bucket that is ready early waits for its predecessors), which keeps the
// collectives matched across ranks. finish() waits for all of them: gradients then hold the
// sum over ranks, and the optimizer's grad_scale = 1/world makes it the mean (no extra pass).
// With compress_to float16 or bfloat16 (--ddp-comm-hook, PyTorch DDP's fp16_compress_hook and
// bf16_compress_hook), a float32 bucket travels as a 16-bit copy of itself divided by the world
// size (so the sum keeps the range of one rank's gradients): half the bytes on the wire, summed
// in float and rounded once per addition; after the wait the copy, times the world size, is
// written back, so the gradients hold the (rounded) sum as without it.
//
// With `owner` (ZeRO stage 2, --strategy zero2) each gradient is summed only where it is
// stepped: when a bucket is ready its gradients are packed into a transient buffer, grouped by
// owning rank in rank order, and one reduce-scatter sums each group into its owner's buffers.
// A rank keeps buffers only for the gradients it owns (1/world of them); backward makes the
// others, the pack takes them and they are dropped, and the pack is freed once its
// reduce-scatter is done (packs_in_flight: at most two packs at once by default, as DeepSpeed's
// stage 2 keeps two buffers; an older pack is waited for before a new one is made). At the
// peak a rank holds a pack and the others' gradients of the next bucket: about 1.5 buckets
// (--bucket-cap-mb) beyond its share. Every backward is reduced, gradient accumulation included
// (the owners' buffers keep the running sums and send them with the new gradients): no rank
// ever holds all the gradients.
//
// With powersgd_rank r > 0 (--ddp-comm-hook powersgd) every bucket is compressed by PowerSGD
// (dist/powersgd.h; 16-bit ones through a float32 copy) from step powersgd_start_iter on, summed
// as they are before (PyTorch's start_powerSGD_iter).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "dist/communicator.h"
#include "dist/powersgd.h"

namespace mlai::dist {

using autograd::Variable;

struct ReducerOptions {
  double bucket_cap_mb = 25.0;
  double first_bucket_mb = 1.0;
  bool overlap = true;  // false: every allreduce starts after backward (--no-overlap)
  // kFloat32: buckets travel as they are; kFloat16/kBFloat16: float32 buckets are compressed.
  tensor::DType compress_to = tensor::DType::kFloat32;
  int powersgd_rank = 0;               // 0: no PowerSGD
  int64_t powersgd_start_iter = 1000;  // optimizer steps summed uncompressed first
  int64_t steps_done = 0;              // optimizer steps before this reducer (a resumed run's)
  // ZeRO stage 2: owner[k], the rank that steps parameter k (empty: every rank gets every sum).
  // No compression with it.
  std::vector<int> owner;
  // Hybrid sharding (--shard-size): `owner` ranks the reducer's communicator (one shard group),
  // and `replicas` holds the ranks that own the same parameters in the other groups. On a
  // step's last backward each owner's sums are then summed over the groups too (one allreduce
  // of its share per bucket, started once the bucket's reduce-scatter is done); the backwards
  // before it (gradient accumulation) keep their running sums within the group.
  Communicator* replicas = nullptr;
  int packs_in_flight = 2;  // buckets whose packs may be awaiting their reduce-scatters at once
};

class Reducer {
 public:
  Reducer(std::vector<std::pair<std::string, Variable>> params, Communicator& comm,
          const ReducerOptions& opt);
  ~Reducer();  // removes its hooks from the parameters
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Zeroes every bucket (one fill each) and re-arms the hooks; call before each backward.
  void zero_grad();
  // Gradient accumulation (PyTorch DDP's no_sync): sync false lets the next backward add into
  // the buckets with no communication; sync true re-arms the hooks without zeroing, so the
  // backward that follows allreduces the accumulated sums. Every rank must pass the same.
  void prepare_backward(bool sync);
  // Starts what has not started and waits for every bucket.
  void finish();
  // ZeRO stage 2 (ReducerOptions::owner): every backward is reduced (prepare_backward(false)
  // arms the hooks too), so finish() follows every backward, not only a step's last.
  bool shards_gradients() const { return !opt_.owner.empty(); }
  // Bytes of gradient buffers this rank keeps between steps (all of them, or its own share),
  // and the most its transient packs held at once.
  size_t kept_grad_bytes() const;
  size_t peak_pack_bytes() const { return peak_pack_bytes_; }

  size_t bucket_count() const { return buckets_.size(); }
  std::vector<std::vector<std::string>> bucket_names() const;
  // Buckets whose allreduce started from a hook during the last backward (overlap evidence).
  int started_during_backward() const { return started_in_backward_; }
  // Bytes one allreduce of every bucket puts on the wire per rank (the compressed size where
  // compression applies; PowerSGD's once it has started).
  size_t wire_bytes() const;
  // Parameters PowerSGD compresses (the others are summed as they are).
  int64_t powersgd_matrices() const;

 private:
  struct Bucket {
    tensor::Tensor flat;
    tensor::Tensor wire;         // the 16-bit copy that travels (compression only)
    std::unique_ptr<PowerSgdBucket> powersgd;  // --ddp-comm-hook powersgd
    tensor::Tensor f32;                        // PowerSGD's float32 copy of a 16-bit bucket
    std::vector<size_t> params;  // indices into params_
    int pending = 0;
    bool ready = false;
    std::unique_ptr<Work> work;
    // ZeRO stage 2: flat holds only this rank's gradients (the reduce-scatter's result); when
    // the bucket is ready every gradient is copied into `pack`, in `params` order (grouped by
    // owner, in rank order), segment_counts[r] elements for rank r.
    std::vector<int64_t> segment_counts;
    tensor::Tensor pack;
    std::unique_ptr<Work> scatter;
    bool sync = false;                // a step's last backward packed it (hybrid sharding)
    std::unique_ptr<Work> replica;    // hybrid sharding: the sum over the groups
    double launched_us = -1;  // --profiler-trace: when its allreduce started (-1: untraced)
  };
  void on_ready(size_t bucket);
  void start_ready_in_order();
  void start_sharded(Bucket& b);
  void wait_sharded(Bucket& b);  // waits for its reduce-scatter and frees its pack
  void wait_replica(Bucket& b);  // hybrid sharding: waits for the sum over the groups

  std::vector<std::pair<std::string, Variable>> params_;
  Communicator& comm_;
  ReducerOptions opt_;
  std::vector<Bucket> buckets_;
  size_t next_to_start_ = 0;
  bool in_backward_ = false;
  bool sync_ = true;  // this backward ends a step (prepare_backward)
  int started_in_backward_ = 0;
  int64_t steps_ = 0;          // synced backwards finished (optimizer steps)
  bool powersgd_now_ = false;  // this step's buckets go through PowerSGD
  std::vector<size_t> packed_;  // ZeRO stage 2: buckets whose packs are in flight, oldest first
  size_t peak_pack_bytes_ = 0;
};

// Copies rank 0's parameters and buffers to every rank.
void broadcast_tensors(Communicator& comm, const std::vector<tensor::Tensor*>& tensors);

}  // namespace mlai::dist
