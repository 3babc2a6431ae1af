// Trainer's data parallelism under mpirun/srun (see trainer.h): the communicators (hybrid
// sharding's groups among them), the broadcast from rank 0, ZeRO, the reducer and SyncBatchNorm,
// and the lines that say how the job is laid out.
#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "dist/communicator.h"
#include "nn/conv_layers.h"
#include "nn/trainer.h"

namespace mlai::nn {

// --shard-size: the ranks one copy of the model is sharded over (a divisor of the world size).
// Collective: every rank reaches the same answer, or the same error.
int resolve_shard_size(const Config& cfg, const dist::ProcessGroup& g) {
  const int world = g.world();
  std::string spec = cfg.shard_size;
  if (spec == "auto") spec = cfg.strategy == "hybrid_shard" ? "node" : "world";
  if (world == 1 || spec == "world") return world;
  int n = 0;
  if (spec == "node") {
    // Groups of consecutive ranks are the nodes only if every node holds as many ranks, placed
    // in blocks (rank r on node r / ranks-per-node), as srun and mpirun place them by default.
    const int local = g.local_world();
    const double most = dist::allreduce_host(g, local, true);
    const double least = -dist::allreduce_host(g, -local, true);
    const double scattered =
        dist::allreduce_host(g, g.rank() % local != g.local_rank() ? 1.0 : 0.0, true);
    if (most != least)
      throw std::invalid_argument(
          "--shard-size node: the nodes hold different numbers of ranks (" +
          std::to_string(static_cast<int>(least)) + " to " + std::to_string(static_cast<int>(most)) +
          "); start as many on each (srun --ntasks-per-node) or give --shard-size N");
    if (scattered > 0)
      throw std::invalid_argument(
          "--shard-size node: the ranks are not placed on the nodes in blocks (rank r on node r "
          "/ ranks-per-node); use srun --distribution=block or mpirun --map-by slot, or give "
          "--shard-size N");
    n = local;
  } else {
    n = std::stoi(spec);
  }
  if (n > world || world % n != 0)
    throw std::invalid_argument("--shard-size " + cfg.shard_size + ": " + std::to_string(n) +
                                " ranks do not divide the world size " + std::to_string(world) +
                                " into groups");
  return n;
}

void Trainer::setup_data_parallel() {
  const int world = group_.world();
  comm_ = dist::make_communicator(cfg_.dist_backend, device_, group_);
  if (cfg_.zero() && shard_size_ < world) {  // hybrid sharding's two kinds of groups
    shard_comm_ = comm_->split(group_.rank() / shard_size_, group_.rank());
    replica_comm_ = comm_->split(group_.rank() % shard_size_, group_.rank());
  }
  // Every rank starts from rank 0's weights and buffers (and optimizer state on resume).
  sync_from_rank0(true);
  build_reducer();
  if (cfg_.zero()) {  // (after the broadcast: every rank holds rank 0's weights)
    // Under mixed precision the float32 masters are sharded too (a weight average is, below).
    ZeroOptions zo;
    zo.backward_prefetch = parse_backward_prefetch(cfg_.backward_prefetch);
    zo.forward_prefetch = cfg_.forward_prefetch;
    std::vector<Module*> units;
    if (cfg_.zero_stage() == 3) units = sharding_units(*model_, zo.unit_of);
    zo.gathers_to_rank0 = group_.rank() < shard_size_;  // (the group that writes checkpoints)
    zero_ = std::make_unique<ZeroRedundancy>(*opt_, shard_comm(), zo);
    for (size_t u = 0; u < units.size(); ++u) {
      auto unit = std::make_shared<Module::ShardedUnit>();
      ZeroRedundancy* z = zero_.get();
      const int i = static_cast<int>(u);
      unit->gather = [z, i](bool backward) { z->gather_unit(i, backward); };
      unit->release = [z, i](bool backward) { z->release_unit(i, backward); };
      units[u]->set_sharded_unit(unit);
    }
    const int stage = cfg_.zero_stage();
    if (main_ && shard_size_ < world)
      std::printf(
          "hybrid sharding: %d groups of %d ranks (--shard-size %s), each sharding the model "
          "over its ranks; the ranks holding the same shard sum its gradients across the "
          "groups\n",
          world / shard_size_, shard_size_, cfg_.shard_size.c_str());
    else if (main_ && cfg_.strategy == "hybrid_shard")
      std::printf("note: --strategy hybrid_shard with one group of %d ranks (--shard-size %s): "
                  "nothing to replicate, it shards as zero3\n",
                  shard_size_, cfg_.shard_size.c_str());
    if (main_)
      std::printf(
          "ZeRO stage %d: optimizer state sharded over %d ranks; rank 0 keeps %.1f MB of "
          "%.1f MB (%.0f%%)\n",
          stage, shard_size_, static_cast<double>(opt_->state_bytes()) / 1e6,
          static_cast<double>(zero_->total_state_bytes()) / 1e6,
          100.0 * static_cast<double>(opt_->state_bytes()) /
              static_cast<double>(std::max<int64_t>(zero_->total_state_bytes(), 1)));
    if (main_ && zero_->masters_sharded())
      std::printf(
          "ZeRO: float32 masters sharded too; rank 0 keeps %.1f MB of %.1f MB, each owner's "
          "%s working copies %s\n",
          static_cast<double>(zero_->master_bytes()) / 1e6,
          static_cast<double>(zero_->total_master_bytes()) / 1e6,
          tensor::dtype_name(compute_dtype(precision_)),
          zero_->parameters_sharded() ? "gathered with their unit"
                                      : "broadcast after the step");
    if (main_ && zero_->parameters_sharded())
      std::printf(
          "ZeRO stage 3: parameters sharded too, in %d unit(s) (its blocks, and the rest of "
          "the model); between uses rank 0 keeps %.1f MB of the %.1f MB forward computes "
          "with, each unit gathered for its forward and its backward (prefetch: %s%s)\n",
          zero_->unit_count(), static_cast<double>(zero_->parameter_bytes()) / 1e6,
          static_cast<double>(zero_->total_parameter_bytes()) / 1e6,
          cfg_.backward_prefetch.c_str(), cfg_.forward_prefetch ? " and forward" : "");
    if (main_ && reducer_->shards_gradients())
      std::printf(
          "ZeRO stage %d: gradients sharded too; rank 0 keeps %.1f MB of %.1f MB, each "
          "bucket reduced to the ranks that own its parts\n",
          stage, static_cast<double>(reducer_->kept_grad_bytes()) / 1e6,
          static_cast<double>(reducer_->wire_bytes()) / 1e6);
    if (WeightAverage* avg = weight_average(); avg && main_) {
      double whole = 0;  // (what one process would average: the model's tensors)
      for (const auto& [n, t] : model_->named_tensors())
        whole += static_cast<double>(t->numel()) * static_cast<double>(dtype_size(t->dtype()));
      std::printf("ZeRO: the weight average (%s) sharded too; rank 0 keeps %.1f MB of %.1f MB\n",
                  ema_ ? "--ema-decay" : "--swa-lrs", static_cast<double>(avg->bytes()) / 1e6,
                  whole / 1e6);
    }
  }
  if (cfg_.sync_bn) {
    const std::vector<BatchNorm2d*> bns = batch_norms(*model_);
    for (BatchNorm2d* bn : bns)
      bn->set_sync([this](Tensor& t) { comm_->allreduce_sum(t); }, world);
    if (main_)
      std::printf("sync batch norm: %zu layer(s) normalise with the global batch's statistics\n",
                  bns.size());
  }
  std::string hook;  // --ddp-comm-hook: what the compression leaves of a step's allreduces
  char buf[192];
  if (parse_ddp_comm_hook(cfg_.ddp_comm_hook) != tensor::DType::kFloat32) {
    std::snprintf(buf, sizeof(buf), ", %s gradient compression (%.2f MB a step on the wire)",
                  cfg_.ddp_comm_hook.substr(0, 4).c_str(),
                  static_cast<double>(reducer_->wire_bytes()) / 1e6);
    hook = buf;
  } else if (cfg_.powersgd()) {
    std::snprintf(buf, sizeof(buf),
                  ", PowerSGD rank %lld on %lld matrices from step %lld (%.3f MB a step on the "
                  "wire)",
                  static_cast<long long>(cfg_.powersgd_rank),
                  static_cast<long long>(reducer_->powersgd_matrices()),
                  static_cast<long long>(cfg_.powersgd_start_iter),
                  static_cast<double>(reducer_->wire_bytes()) / 1e6);
    hook = buf;
  }
  if (main_)
    std::printf(
        "data parallel: world size %d on %d node(s), backend %s, %zu gradient bucket(s) "
        "of <= %.0f MB, overlap %s%s; batch %lld per rank, %lld in all; lr %g%s\n",
        world, group_.nodes(), comm_->name(), reducer_->bucket_count(), cfg_.bucket_cap_mb,
        cfg_.overlap ? "on" : "off", hook.c_str(), static_cast<long long>(cfg_.batch_size),
        static_cast<long long>(cfg_.batch_size * world), cfg_.lr,
        cfg_.lr_scale == "linear" ? " (scaled linearly)" : "");
}

void Trainer::build_reducer() {
  reducer_.reset();  // its hooks off the parameters first
  dist::ReducerOptions ro;
  ro.bucket_cap_mb = cfg_.bucket_cap_mb;
  ro.overlap = cfg_.overlap;
  // ZeRO stage 2's transient packs: two on a GPU, where waiting for the older one only makes
  // the stream wait, so one bucket's reduce-scatter overlaps the next's backward; one on CPU
  // ranks, which is as fast there (two CPU ranks, resnet18_cifar) and holds a bucket less.
  ro.packs_in_flight = device_.is_cuda() ? 2 : 1;
  ro.compress_to = parse_ddp_comm_hook(cfg_.ddp_comm_hook);
  ro.powersgd_rank = cfg_.powersgd() ? static_cast<int>(cfg_.powersgd_rank) : 0;
  ro.powersgd_start_iter = cfg_.powersgd_start_iter;
  ro.steps_done = state_.global_step;  // a resumed run compresses from where it was
  // The variables backward gives gradients to: fp16/bf16 working copies under mixed
  // precision (half the bytes to allreduce), the float32 parameters otherwise; frozen ones
  // get none, and a bucket waiting for them would never be ready.
  const auto params = model_->named_parameters();
  const auto working = model_->working_parameters();
  std::vector<std::pair<std::string, Variable>> grad_owners;
  std::vector<int> owners;  // (ZeRO's partition, as the optimizer's)
  if (opt_->config().sharded_gradients) {
    std::vector<int64_t> sizes;
    for (const auto& [n, v] : params) sizes.push_back(v.numel());
    owners = partition_parameters(sizes, shard_size_);
  }
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].second.requires_grad()) {
      grad_owners.emplace_back(params[i].first,
                               working[i].defined() ? working[i] : params[i].second);
      // --strategy zero2: each gradient is summed only on the rank whose optimizer steps it.
      if (opt_->config().sharded_gradients) ro.owner.push_back(owners[i]);
    }
  // Sharded gradients are reduced within the shard group, then (hybrid sharding) across the
  // groups; zero1 allreduces every gradient over the job as DDP does.
  ro.replicas = opt_->config().sharded_gradients ? replica_comm_.get() : nullptr;
  reducer_ = std::make_unique<dist::Reducer>(
      grad_owners, opt_->config().sharded_gradients ? shard_comm() : *comm_, ro);
}

}  // namespace mlai::nn
