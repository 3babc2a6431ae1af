// ZeRO stage 1: the partition, the owners' flat buffers and their broadcasts (see zero.h).
#include "nn/zero.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "nn/activation_checkpointing.h"
#include "tensor/ops.h"

namespace mlai::nn {

namespace {
// Each parameter's place in its owner's buffers starts at a multiple of this many elements
// (64 bytes of float32), so the views start as aligned as a fresh tensor's cache lines.
constexpr int64_t kAlign = 16;
}  // namespace

std::vector<int> partition_parameters(const std::vector<int64_t>& sizes, int world) {
  if (world < 1) throw std::invalid_argument("partition_parameters: world size must be >= 1");
  std::vector<size_t> order(sizes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(sizes.size(), 0);
  for (size_t i : order) {
    const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = static_cast<int>(r);
    load[r] += sizes[i];
  }
  return owner;
}

std::vector<bool> owned_parameters(const std::vector<std::pair<std::string, Variable>>& params,
                                   int rank, int world) {
  std::vector<int64_t> sizes;
  for (const auto& [n, v] : params) sizes.push_back(v.numel());
  const std::vector<int> owner = partition_parameters(sizes, world);
  std::vector<bool> owned(owner.size());
  for (size_t i = 0; i < owner.size(); ++i) owned[i] = owner[i] == rank;
  return owned;
}

namespace {
void assign_units(Module& m, int unit, std::vector<Module*>& units, std::vector<int>& unit_of) {
  if (is_residual_block(m)) {
    unit = static_cast<int>(units.size());
    units.push_back(&m);
  }
  // named_parameters() lists a module's own parameters first, then each child's.
  size_t own = m.named_parameters().size();
  for (const auto& [n, c] : m.children()) own -= c->named_parameters().size();
  unit_of.insert(unit_of.end(), own, unit);
  for (const auto& [n, c] : m.children()) assign_units(*c, unit, units, unit_of);
}
}  // namespace

BackwardPrefetch parse_backward_prefetch(const std::string& name) {
  if (name == "backward_pre") return BackwardPrefetch::kPre;
  if (name == "backward_post") return BackwardPrefetch::kPost;
  if (name == "none") return BackwardPrefetch::kNone;
  throw std::invalid_argument("--backward-prefetch must be backward_pre, backward_post or none (got '" +
                              name + "')");
}

std::vector<Module*> sharding_units(Module& model, std::vector<int>& unit_of) {
  std::vector<Module*> units{&model};
  unit_of.clear();
  assign_units(model, 0, units, unit_of);
  if (unit_of.size() != model.named_parameters().size())
    throw std::logic_error("ZeRO stage 3: units found for " + std::to_string(unit_of.size()) +
                           " of " + std::to_string(model.named_parameters().size()) +
                           " parameters");
  return units;
}

ZeroRedundancy::ZeroRedundancy(Optimizer& opt, dist::Communicator& comm, ZeroOptions options)
    : opt_(opt), comm_(comm) {
  const auto& params = opt_.parameters();
  std::vector<int64_t> sizes;
  for (const auto& [n, v] : params) sizes.push_back(v.numel());
  owner_ = partition_parameters(sizes, comm_.world());
  for (size_t i = 0; i < params.size(); ++i)
    if (opt_.owns(i) != (owner_[i] == comm_.rank()))
      throw std::logic_error("ZeRO: the optimizer owns " + params[i].first + " on rank " +
                             std::to_string(comm_.rank()) + " (" + (opt_.owns(i) ? "" : "not ") +
                             "by OptimizerConfig::owned), the partition says otherwise");
  if (!options.unit_of.empty() && options.unit_of.size() != params.size())
    throw std::logic_error("ZeRO stage 3: " + std::to_string(options.unit_of.size()) +
                           " units given for " + std::to_string(params.size()) + " parameters");
  for (int u : options.unit_of) units_ = std::max(units_, u + 1);
  const auto world = static_cast<size_t>(comm_.world());
  const size_t segments = world * static_cast<size_t>(std::max(units_, 1));
  // Offsets within each segment's plain buffer (no working copy) or masters buffer (with one).
  std::vector<int64_t> plain_used(segments, 0), masters_used(segments, 0);
  segment_.assign(params.size(), 0);
  offset_.assign(params.size(), 0);
  DType working_dtype = DType::kFloat32;
  for (size_t i = 0; i < params.size(); ++i) {
    const Variable w = opt_.working(i);
    if (w.defined()) {
      if (working_dtype != DType::kFloat32 && w.dtype() != working_dtype)
        throw std::invalid_argument("ZeRO: working copies of more than one dtype");
      working_dtype = w.dtype();
    }
    const int unit = options.unit_of.empty() ? 0 : options.unit_of[i];
    segment_[i] = static_cast<size_t>(unit) * world + static_cast<size_t>(owner_[i]);
    int64_t& u = (w.defined() ? masters_used : plain_used)[segment_[i]];
    offset_[i] = u;
    u += (sizes[i] + kAlign - 1) / kAlign * kAlign;
  }
  plain_.resize(segments);
  masters_.resize(segments);
  working_.resize(segments);
  const Device dev = params.empty() ? Device::cpu() : params[0].second.device();
  for (size_t s = 0; s < segments; ++s) {  // (some are empty: more ranks than parameters)
    const int root = static_cast<int>(s % world);
    plain_[s].root = masters_[s].root = working_[s].root = root;
    if (plain_used[s] > 0) plain_[s].t = Tensor::zeros({plain_used[s]}, DType::kFloat32, dev);
    if (masters_used[s] == 0) continue;
    masters_[s].t = Tensor::zeros({masters_used[s]}, DType::kFloat32, dev);
    working_[s].t = Tensor::zeros({masters_used[s]}, working_dtype, dev);
  }
  // The parameters become views of their buffers, with the values they hold.
  for (size_t i = 0; i < params.size(); ++i) {
    const size_t s = segment_[i];
    Variable v = params[i].second;
    const Variable w = opt_.working(i);
    Tensor& buf = w.defined() ? masters_[s].t : plain_[s].t;
    Tensor view = buf.slice(offset_[i], offset_[i] + sizes[i]).reshape(v.shape());
    view.copy_from(v.data());
    v.data() = view;
    if (w.defined()) {
      Tensor wv = working_[s].t.slice(offset_[i], offset_[i] + sizes[i]).reshape(w.shape());
      wv.copy_from(w.data());
      Variable(w).data() = wv;
    }
  }
  // What is sharded is released on the ranks that do not own it. Without working copies there
  // are no masters apart from what forward reads.
  masters_sharded_ = working_dtype != DType::kFloat32;
  unit_held_.assign(static_cast<size_t>(units_), false);
  prefetched_.assign(static_cast<size_t>(units_), false);
  backward_prefetch_ = options.backward_prefetch;
  forward_prefetch_ = options.forward_prefetch;
  gathers_to_rank0_ = options.gathers_to_rank0;
  for (size_t s = 0; s < segments; ++s) {
    masters_[s].sharded = masters_sharded_;
    plain_[s].sharded = working_[s].sharded = units_ > 0;
    for (Shard* sh : {&plain_[s], &masters_[s], &working_[s]})
      if (sh->sharded && sh->t.defined() && sh->root != comm_.rank()) sh->t.storage()->release();
  }
}

void ZeroRedundancy::acquire(const std::vector<Shard*>& shards) {
  std::vector<dist::Communicator::Broadcast> items;
  std::vector<Shard*> filled;
  for (Shard* s : shards) {
    if (!s->sharded || !s->t.defined() || s->holds++ > 0) continue;
    if (s->root != comm_.rank()) s->t.storage()->reallocate();
    items.push_back({&s->t, s->root});
    filled.push_back(s);
  }
  if (items.empty()) return;
  auto pending = std::make_shared<Pending>();
  pending->work = comm_.broadcast_many_async(items);
  for (Shard* s : filled) s->pending = pending;
}

void ZeroRedundancy::settle(Shard& s) {
  if (!s.pending) return;
  s.pending->wait();
  s.pending.reset();
}

void ZeroRedundancy::drop(Shard& s) {
  if (!s.sharded || !s.t.defined() || s.holds == 0 || --s.holds > 0) return;
  settle(s);  // (the broadcast may still be writing it)
  if (s.root != comm_.rank()) s.t.storage()->release();
}

void ZeroRedundancy::broadcast_parameters() {
  if (parameters_sharded()) return;  // (stage 3: each unit is gathered when next needed)
  // Every owner's broadcasts as one operation: the ranks' sends overlap.
  std::vector<dist::Communicator::Broadcast> items;
  for (size_t s = 0; s < plain_.size(); ++s) {
    const int root = plain_[s].root;
    if (plain_[s].t.defined()) items.push_back({&plain_[s].t, root});
    if (!masters_[s].t.defined()) continue;
    // Sharded masters: the owner's step refreshed its working copies from its masters, and
    // they go as they are.
    items.push_back({masters_sharded() ? &working_[s].t : &masters_[s].t, root});
  }
  comm_.broadcast_many_async(items)->wait();
  if (masters_sharded()) return;
  // The owner's step refreshed its own working copies; the others round the masters received,
  // as that step rounds them (to nearest even), in one launch per owner.
  for (size_t s = 0; s < masters_.size(); ++s)
    if (masters_[s].t.defined() && masters_[s].root != comm_.rank())
      tensor::scale_cast_(masters_[s].t, working_[s].t, 1.0);
}

void ZeroRedundancy::gather_masters() {
  if (masters_gathered_++ > 0 || whole_ || !gathers_to_rank0_) return;
  const auto& params = opt_.parameters();
  const int rank = comm_.rank();
  std::vector<std::unique_ptr<dist::Work>> sends;
  for (std::vector<Shard>* kind : {&masters_, &plain_}) {
    for (size_t s = 0; s < kind->size(); ++s) {
      Shard& sh = (*kind)[s];
      // Whole everywhere (not sharded, or held: holds count alike on every rank), or rank 0's.
      if (!sh.sharded || !sh.t.defined() || sh.holds > 0 || sh.root == 0) continue;
      if (rank == sh.root) sends.push_back(comm_.send_async(sh.t, 0));
      if (rank != 0) continue;
      // One owner's buffer at a time on the device, then on the host in its parameters' place.
      Tensor buf = Tensor::empty(sh.t.shape(), sh.t.dtype(), sh.t.device());
      comm_.recv_async(buf, sh.root)->wait();
      const Tensor host = buf.to(Device::cpu());  // (the CPU backend: buf itself)
      for (size_t i = 0; i < params.size(); ++i) {
        if (segment_[i] != s || opt_.working(i).defined() != (kind == &masters_)) continue;
        Variable v = params[i].second;
        offloaded_.emplace_back(i, v.data());
        v.data() = host.slice(offset_[i], offset_[i] + v.numel()).reshape(v.shape());
      }
    }
  }
  for (auto& w : sends) w->wait();
}

void ZeroRedundancy::release_masters() {
  if (masters_gathered_ == 0 || --masters_gathered_ > 0) return;
  const auto& params = opt_.parameters();
  for (auto& [i, view] : offloaded_) Variable(params[i].second).data() = view;
  offloaded_.clear();
}

void ZeroRedundancy::unshard() {
  if (whole_) return;
  std::vector<Shard*> all;
  for (size_t s = 0; s < masters_.size(); ++s)
    for (Shard* sh : {&plain_[s], &masters_[s], &working_[s]}) all.push_back(sh);
  acquire(all);
  for (Shard* sh : all) {
    settle(*sh);
    sh->sharded = false;  // (here for good: nothing drops it)
  }
  whole_ = true;
}

template <class F>
void ZeroRedundancy::for_unit_shards(int u, F f) {
  const auto world = static_cast<size_t>(comm_.world());
  for (size_t s = static_cast<size_t>(u) * world; s < static_cast<size_t>(u + 1) * world; ++s) {
    f(plain_[s]);
    f(working_[s]);
  }
}

void ZeroRedundancy::post_unit(int u) {
  if (unit_held_[static_cast<size_t>(u)]) return;
  unit_held_[static_cast<size_t>(u)] = true;
  peak_held_ = std::max(peak_held_,
                        static_cast<int>(std::count(unit_held_.begin(), unit_held_.end(), true)));
  std::vector<Shard*> shards;
  for_unit_shards(u, [&shards](Shard& sh) { shards.push_back(&sh); });
  acquire(shards);
}

void ZeroRedundancy::settle_unit(int u) { for_unit_shards(u, settle); }

void ZeroRedundancy::prefetch(int u) {
  if (u < 0 || unit_held_[static_cast<size_t>(u)]) return;
  post_unit(u);
  prefetched_[static_cast<size_t>(u)] = true;
  ++prefetches_;
}

namespace {
// The unit after u in a recorded order (-1: none, or u not in it).
int next_in(const std::vector<int>& order, int u) {
  const auto it = std::find(order.begin(), order.end(), u);
  return it == order.end() || it + 1 == order.end() ? -1 : *(it + 1);
}
}  // namespace

void ZeroRedundancy::gather_unit(int u, bool backward) {
  if (!parameters_sharded()) return;
  std::vector<int>& seen = seen_[backward ? 1 : 0];
  if (std::find(seen.begin(), seen.end(), u) == seen.end()) seen.push_back(u);
  if (prefetched_[static_cast<size_t>(u)]) {
    prefetched_[static_cast<size_t>(u)] = false;
    ++prefetch_hits_;
  }
  post_unit(u);
  // The next unit's broadcasts go out behind this one's, before this one is waited for (by
  // the previous step's order: every rank ran the same, so every rank posts the same).
  if (backward ? backward_prefetch_ == BackwardPrefetch::kPre : forward_prefetch_)
    prefetch(next_in(order_[backward ? 1 : 0], u));
  settle_unit(u);
}

void ZeroRedundancy::release(int u) {
  if (!unit_held_[static_cast<size_t>(u)]) return;
  unit_held_[static_cast<size_t>(u)] = false;
  prefetched_[static_cast<size_t>(u)] = false;
  for_unit_shards(u, [this](Shard& sh) { drop(sh); });
}

void ZeroRedundancy::release_unit(int u, bool backward) {
  if (!parameters_sharded()) return;
  // The root (unit 0) wraps the whole forward, and backward starts with it: FSDP keeps the
  // root's parameters from its forward into backward rather than free and gather them again.
  if (!backward && u == 0) return;
  release(u);
  if (backward && backward_prefetch_ == BackwardPrefetch::kPost)
    prefetch(next_in(order_[1], u));
}

void ZeroRedundancy::release_units() {
  if (!parameters_sharded()) return;
  for (int u = 0; u < units_; ++u) release(u);
  // The order this step ran the units in is the next one's prediction (FSDP records it in the
  // first iteration; here every step's, so a model whose order changes, as a backbone
  // unfrozen, is followed a step later). An evaluation (no backward) changes nothing.
  if (!seen_[1].empty())
    for (int p = 0; p < 2; ++p) order_[p] = std::move(seen_[p]);
  for (auto& seen : seen_) seen.clear();
}

void ZeroRedundancy::send_to_rank0(size_t slots, const std::function<Tensor*(size_t, size_t)>& of) {
  const auto& params = opt_.parameters();
  if (params.empty() || slots == 0 || !gathers_to_rank0_) return;
  const int rank = comm_.rank();
  for (int r = 1; r < comm_.world(); ++r) {
    if (rank != 0 && rank != r) continue;
    // Owner r's tensors, slot by slot, each parameter after the last: packed by r, sent to
    // rank 0 alone, which keeps them on the host (FSDP's rank0_only and offload_to_cpu), one
    // owner's at a time on the device.
    std::vector<int64_t> at(params.size(), 0);
    int64_t n = 0;
    for (size_t i = 0; i < params.size(); ++i)
      if (owner_[i] == r) {
        at[i] = n;
        n += params[i].second.numel();
      }
    if (n == 0) continue;
    Tensor buf = Tensor::empty({static_cast<int64_t>(slots) * n}, DType::kFloat32,
                               params[0].second.device());
    auto place = [&](const Tensor& b, size_t s, size_t i) {
      const int64_t from = static_cast<int64_t>(s) * n + at[i];
      return b.slice(from, from + params[i].second.numel()).reshape(params[i].second.shape());
    };
    if (rank == r) {
      for (size_t i = 0; i < params.size(); ++i)
        if (owner_[i] == r)
          for (size_t s = 0; s < slots; ++s) place(buf, s, i).copy_from(*of(i, s));
      comm_.send_async(buf, 0)->wait();
      continue;
    }
    comm_.recv_async(buf, r)->wait();
    const Tensor host = buf.to(Device::cpu());
    for (size_t i = 0; i < params.size(); ++i)
      if (owner_[i] == r)
        for (size_t s = 0; s < slots; ++s) *of(i, s) = place(host, s, i);
  }
}

void ZeroRedundancy::gather_state() {
  if (gathered_) throw std::logic_error("ZeRO: optimizer state gathered twice");
  gathered_ = true;
  // (SGD without momentum keeps none)
  send_to_rank0(opt_.slot_count(), [this](size_t i, size_t s) { return opt_.state_of(i)[s]; });
}

void ZeroRedundancy::gather_to_rank0(const std::vector<Tensor*>& per_param) {
  if (per_param.size() != opt_.parameters().size())
    throw std::logic_error("ZeRO: " + std::to_string(per_param.size()) + " tensors to gather for " +
                           std::to_string(opt_.parameters().size()) + " parameters");
  send_to_rank0(1, [&per_param](size_t i, size_t) { return per_param[i]; });
}

void ZeroRedundancy::release_state() {
  if (!gathered_) return;
  gathered_ = false;
  if (comm_.rank() != 0 || !gathers_to_rank0_) return;
  const auto& params = opt_.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    if (owner_[i] != 0)
      for (Tensor* t : opt_.state_of(i)) *t = Tensor();
}

int64_t ZeroRedundancy::bytes(const std::vector<Shard>& kind, bool held_only) const {
  int64_t n = 0;
  for (const Shard& sh : kind)
    if (sh.t.defined() && !(held_only && sh.t.released())) n += static_cast<int64_t>(sh.t.nbytes());
  return n;
}

int64_t ZeroRedundancy::master_bytes() const { return bytes(plain_, true) + bytes(masters_, true); }

int64_t ZeroRedundancy::total_master_bytes() const {
  return bytes(plain_, false) + bytes(masters_, false);
}

int64_t ZeroRedundancy::parameter_bytes() const {
  return bytes(plain_, true) + bytes(working_, true);
}

int64_t ZeroRedundancy::total_parameter_bytes() const {
  return bytes(plain_, false) + bytes(working_, false);
}

int64_t ZeroRedundancy::total_state_bytes() const {
  int64_t elements = 0;
  for (const auto& [n, v] : opt_.parameters()) elements += v.numel();
  return static_cast<int64_t>(opt_.slot_count()) * elements * static_cast<int64_t>(sizeof(float));
}

}  // namespace mlai::nn
