// The bucketing gradient reducer (see reducer.h).
#include "dist/reducer.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "tensor/ops.h"
#include "tensor/trace.h"

namespace mlai::dist {

Reducer::Reducer(std::vector<std::pair<std::string, Variable>> params, Communicator& comm,
                 const ReducerOptions& opt)
    : params_(std::move(params)), comm_(comm), opt_(opt) {
  if (params_.empty()) return;
  const tensor::Device dev = params_[0].second.device();
  for (auto& [n, v] : params_) {
    const tensor::DType dt = v.dtype();
    if ((dt != tensor::DType::kFloat32 && dt != tensor::DType::kFloat16 &&
         dt != tensor::DType::kBFloat16) || v.device() != dev)
      throw std::invalid_argument("reducer: parameter " + n + " is " + v.data().str() +
                                  " (float32, float16 or bfloat16 on " + dev.str() + " expected)");
  }
  // Reverse registration order: the last layers' gradients are produced first. A bucket holds
  // one dtype (mixed precision: fp16 working-weight gradients, fp32 batch-norm ones), so each
  // dtype fills its own run of buckets; buckets are then ordered by their first gradient's
  // position in that reverse order, the order backward makes them ready.
  struct Group {
    tensor::DType dtype;
    std::vector<size_t> params;
    size_t bytes = 0;
    size_t first_pos = 0;
    bool first_of_dtype = true;
  };
  std::vector<Group> groups;
  std::vector<int> open_group_of_dtype(16, -1);
  size_t pos = 0;
  for (size_t k = params_.size(); k-- > 0; ++pos) {
    const tensor::DType dt = params_[k].second.dtype();
    const size_t b = params_[k].second.data().nbytes();
    int& open = open_group_of_dtype[static_cast<size_t>(dt)];
    if (open >= 0) {
      Group& g = groups[static_cast<size_t>(open)];
      const double cap = (g.first_of_dtype ? opt_.first_bucket_mb : opt_.bucket_cap_mb) * 1e6;
      if (static_cast<double>(g.bytes + b) > cap) open = -1;
    }
    if (open < 0) {
      Group g;
      g.dtype = dt;
      g.first_pos = pos;
      g.first_of_dtype = std::none_of(groups.begin(), groups.end(),
                                      [&](const Group& o) { return o.dtype == dt; });
      groups.push_back(g);
      open = static_cast<int>(groups.size() - 1);
    }
    Group& g = groups[static_cast<size_t>(open)];
    g.params.push_back(k);
    g.bytes += b;
  }
  std::stable_sort(groups.begin(), groups.end(),
                   [](const Group& a, const Group& b) { return a.first_pos < b.first_pos; });
  const bool sharded = !opt_.owner.empty();
  if (opt_.replicas && !sharded)
    throw std::invalid_argument("reducer: replica groups without owners (hybrid sharding shards "
                                "the gradients within each group)");
  if (sharded) {
    if (opt_.owner.size() != params_.size())
      throw std::invalid_argument("reducer: " + std::to_string(opt_.owner.size()) + " owners for " +
                                  std::to_string(params_.size()) + " parameters");
    if (opt_.compress_to != tensor::DType::kFloat32 || opt_.powersgd_rank > 0)
      throw std::invalid_argument(
          "--ddp-comm-hook compresses DDP's allreduce; ZeRO stage 2 (--strategy zero2) reduces "
          "the gradients as they are");
  }
  for (auto& g : groups) {
    Bucket bucket;
    if (sharded) {  // this rank's gradients in flat; all of them packed when the bucket is ready
      const int me = comm_.rank();
      bucket.params = g.params;
      std::stable_sort(bucket.params.begin(), bucket.params.end(),
                       [&](size_t a, size_t b) { return opt_.owner[a] < opt_.owner[b]; });
      bucket.segment_counts.assign(static_cast<size_t>(comm_.world()), 0);
      for (size_t k : bucket.params)
        bucket.segment_counts.at(static_cast<size_t>(opt_.owner[k])) += params_[k].second.numel();
      bucket.flat =
          tensor::Tensor::zeros({bucket.segment_counts[static_cast<size_t>(me)]}, g.dtype, dev);
      int64_t off = 0;
      for (size_t k : bucket.params) {
        Variable& v = params_[k].second;
        if (opt_.owner[k] != me) {
          v.set_grad(tensor::Tensor());
          continue;
        }
        v.set_grad(bucket.flat.slice(off, off + v.numel()).reshape(v.shape()));
        off += v.numel();
      }
      buckets_.push_back(std::move(bucket));
      continue;
    }
    int64_t total = 0;
    for (size_t k : g.params) total += params_[k].second.numel();
    bucket.flat = tensor::Tensor::zeros({total}, g.dtype, dev);
    int64_t off = 0;
    for (size_t k : g.params) {
      Variable& v = params_[k].second;
      v.set_grad(bucket.flat.slice(off, off + v.numel()).reshape(v.shape()));
      off += v.numel();
    }
    bucket.params = g.params;
    if (g.dtype == tensor::DType::kFloat32 && opt_.compress_to != tensor::DType::kFloat32)
      bucket.wire = tensor::Tensor::zeros({total}, opt_.compress_to, dev);
    if (opt_.powersgd_rank > 0) {
      // A 16-bit bucket (mixed precision's working weights) is compressed from a float32 copy,
      // as PyTorch's hook compresses AMP's float32 gradients.
      if (g.dtype != tensor::DType::kFloat32)
        bucket.f32 = tensor::Tensor::zeros({total}, tensor::DType::kFloat32, dev);
      std::vector<PowerSgdBucket::Param> layout;
      int64_t at = 0;
      for (size_t k : g.params) {
        layout.push_back({at, params_[k].second.shape()});
        at += params_[k].second.numel();
      }
      bucket.powersgd =
          std::make_unique<PowerSgdBucket>(layout, opt_.powersgd_rank, buckets_.size(), dev);
    }
    buckets_.push_back(std::move(bucket));
  }
  for (size_t b = 0; b < buckets_.size(); ++b)
    for (size_t k : buckets_[b].params)
      params_[k].second.register_grad_ready_hook([this, b](Variable&) { on_ready(b); });
  zero_grad();
}

Reducer::~Reducer() {
  for (auto& [n, v] : params_) v.clear_grad_ready_hooks();
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
    if (b.scatter) b.scatter->wait();
    if (b.replica) b.replica->wait();
  }
}

std::vector<std::vector<std::string>> Reducer::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const Bucket& b : buckets_) {
    out.emplace_back();
    for (size_t k : b.params) out.back().push_back(params_[k].first);
  }
  return out;
}

size_t Reducer::kept_grad_bytes() const {
  size_t bytes = 0;
  for (const Bucket& b : buckets_) bytes += b.flat.nbytes();
  return bytes;
}

size_t Reducer::wire_bytes() const {
  size_t bytes = 0;
  if (shards_gradients()) {  // every gradient, each reduced to its owner
    for (const auto& [n, v] : params_) bytes += v.data().nbytes();
    return bytes;
  }
  for (const Bucket& b : buckets_)
    bytes += b.powersgd ? b.powersgd->wire_bytes() : (b.wire.defined() ? b.wire : b.flat).nbytes();
  return bytes;
}

int64_t Reducer::powersgd_matrices() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_)
    if (b.powersgd) n += b.powersgd->compressed_matrices();
  return n;
}

void Reducer::zero_grad() {
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();  // never overwrite a buffer a collective still uses
    b.work.reset();
    wait_sharded(b);
    wait_replica(b);
    tensor::fill_(b.flat, 0.0);
    if (shards_gradients())  // (the others' gradients of a backward never reduced, if any)
      for (size_t k : b.params)
        if (opt_.owner[k] != comm_.rank()) params_[k].second.set_grad(tensor::Tensor());
  }
  prepare_backward(true);
}

void Reducer::prepare_backward(bool sync) {
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
    b.work.reset();
    wait_sharded(b);
    wait_replica(b);
    b.pending = static_cast<int>(b.params.size());
    b.ready = false;
  }
  next_to_start_ = 0;
  started_in_backward_ = 0;
  // (hooks ignore a backward that is not armed; ZeRO stage 2 reduces every backward)
  in_backward_ = sync || shards_gradients();
  sync_ = sync;
  powersgd_now_ = opt_.powersgd_rank > 0 && opt_.steps_done + steps_ >= opt_.powersgd_start_iter;
}

void Reducer::on_ready(size_t b) {
  if (!in_backward_) return;
  Bucket& bucket = buckets_[b];
  if (--bucket.pending == 0) bucket.ready = true;
  if (opt_.overlap) start_ready_in_order();
  comm_.progress();
  if (opt_.replicas) opt_.replicas->progress();
}

void Reducer::start_ready_in_order() {
  while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].ready) {
    Bucket& b = buckets_[next_to_start_++];
    b.launched_us = trace::enabled() ? trace::now_us() : -1;
    if (shards_gradients()) {
      start_sharded(b);
    } else if (b.powersgd && powersgd_now_) {  // round 1: the P's and the uncompressed values
      if (b.f32.defined()) tensor::scale_cast_(b.flat, b.f32, 1.0);
      b.powersgd->compress(b.f32.defined() ? b.f32 : b.flat);
      b.work = comm_.allreduce_sum_async(b.powersgd->wire());
    } else if (b.wire.defined()) {  // compress: the mean's share, in 16 bits
      tensor::scale_cast_(b.flat, b.wire, 1.0 / comm_.world());
      b.work = comm_.allreduce_sum_async(b.wire);
    } else {
      b.work = comm_.allreduce_sum_async(b.flat);
    }
    if (in_backward_) ++started_in_backward_;
  }
}

void Reducer::start_sharded(Bucket& b) {
  // Bounded transient memory: the oldest packs are freed (their reduce-scatters waited for)
  // before another is made.
  while (packed_.size() >= static_cast<size_t>(std::max(opt_.packs_in_flight, 1)))
    wait_sharded(buckets_[packed_.front()]);
  int64_t total = 0;
  for (int64_t c : b.segment_counts) total += c;
  b.pack = tensor::Tensor::empty({total}, b.flat.dtype(), b.flat.device());
  int64_t at = 0;
  for (size_t k : b.params) {
    Variable& v = params_[k].second;
    tensor::Tensor place = b.pack.slice(at, at + v.numel()).reshape(v.shape());
    if (v.grad().defined()) {
      place.copy_from(v.grad());  // (this rank's own: the running sum, as the others add to it)
    } else {
      tensor::fill_(place, 0.0);  // unused in this forward: every rank still sends its part
    }
    if (opt_.owner[k] != comm_.rank()) v.set_grad(tensor::Tensor());  // its memory goes back
    at += v.numel();
  }
  packed_.push_back(static_cast<size_t>(&b - buckets_.data()));
  size_t in_flight = 0;
  for (size_t k : packed_) in_flight += buckets_[k].pack.nbytes();
  peak_pack_bytes_ = std::max(peak_pack_bytes_, in_flight);
  b.sync = sync_;
  b.scatter = comm_.reduce_scatter_async(b.pack, b.flat, b.segment_counts);
}

void Reducer::wait_sharded(Bucket& b) {
  if (b.scatter) {
    b.scatter->wait();
    b.scatter.reset();
    // Hybrid sharding: the group's sums (all its backwards' since the step began) summed over
    // the groups, which then hold the same totals.
    if (opt_.replicas && b.sync) b.replica = opt_.replicas->allreduce_sum_async(b.flat);
  }
  if (!b.pack.defined()) return;
  b.pack = tensor::Tensor();
  std::erase(packed_, static_cast<size_t>(&b - buckets_.data()));
}

void Reducer::wait_replica(Bucket& b) {
  if (b.replica) b.replica->wait();
  b.replica.reset();
}

void Reducer::finish() {
  // Buckets whose hooks never fired (parameters unused in this forward) reduce zeros: every
  // rank still issues every collective, in order.
  in_backward_ = false;
  for (Bucket& b : buckets_) b.ready = true;
  start_ready_in_order();
  // Hybrid sharding: every bucket's sum over the groups starts before any is waited for.
  if (opt_.replicas)
    for (Bucket& b : buckets_) wait_sharded(b);
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = buckets_[k];
    if (b.work) b.work->wait();
    wait_sharded(b);
    wait_replica(b);
    const bool powersgd = b.powersgd && powersgd_now_;
    if (powersgd) {  // round 2 (the Q's) and P Q^T
      b.powersgd->decompress(b.f32.defined() ? b.f32 : b.flat, comm_);
      if (b.f32.defined()) tensor::scale_cast_(b.f32, b.flat, 1.0);
    }
    if (b.wire.defined())  // decompress: the mean times the world size, the sum as uncompressed
      tensor::scale_cast_(b.wire, b.flat, static_cast<double>(comm_.world()));
    if (b.launched_us >= 0 && trace::enabled()) {  // from launch to the wait that found it done
      const tensor::Tensor& sent = powersgd           ? b.powersgd->wire()
                                   : b.wire.defined() ? b.wire
                                                      : b.flat;
      size_t bytes = sent.nbytes();
      if (shards_gradients()) {  // the whole bucket, each part summed on its owner
        bytes = 0;
        for (size_t p : b.params) bytes += params_[p].second.data().nbytes();
      }
      char name[80];
      std::snprintf(name, sizeof(name), "%s bucket %zu (%.2f MB %s)",
                    shards_gradients() ? "reduce_scatter" : "allreduce", k,
                    static_cast<double>(bytes) / 1e6, tensor::dtype_name(sent.dtype()));
      trace::record(name, "comm", trace::kBucketTrack + static_cast<int>(k), b.launched_us,
                    trace::now_us());
    }
    b.launched_us = -1;
  }
  ++steps_;
}

void broadcast_tensors(Communicator& comm, const std::vector<tensor::Tensor*>& tensors) {
  for (tensor::Tensor* t : tensors) comm.broadcast(*t, 0);
}

}  // namespace mlai::dist
