// ZeRO stage 1: the partition, the owners' flat buffers and their broadcasts (see zero.h).
#include "nn/zero.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

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

ZeroRedundancy::ZeroRedundancy(Optimizer& opt, dist::Communicator& comm, bool shard_masters)
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
  const auto world = static_cast<size_t>(comm_.world());
  // Offsets within each owner's plain buffer (no working copy) or masters buffer (with one).
  std::vector<int64_t> plain_used(world, 0), masters_used(world, 0);
  offset_.assign(params.size(), 0);
  DType working_dtype = DType::kFloat32;
  for (size_t i = 0; i < params.size(); ++i) {
    const Variable w = opt_.working(i);
    if (w.defined()) {
      if (working_dtype != DType::kFloat32 && w.dtype() != working_dtype)
        throw std::invalid_argument("ZeRO: working copies of more than one dtype");
      working_dtype = w.dtype();
    }
    int64_t& u = (w.defined() ? masters_used : plain_used)[static_cast<size_t>(owner_[i])];
    offset_[i] = u;
    u += (sizes[i] + kAlign - 1) / kAlign * kAlign;
  }
  plain_.resize(world);
  masters_.resize(world);
  working_.resize(world);
  const Device dev = params.empty() ? Device::cpu() : params[0].second.device();
  for (size_t r = 0; r < world; ++r) {  // (a rank may own nothing: more ranks than parameters)
    if (plain_used[r] > 0) plain_[r] = Tensor::zeros({plain_used[r]}, DType::kFloat32, dev);
    if (masters_used[r] == 0) continue;
    masters_[r] = Tensor::zeros({masters_used[r]}, DType::kFloat32, dev);
    working_[r] = Tensor::zeros({masters_used[r]}, working_dtype, dev);
  }
  // The parameters become views of their owner's buffers, with the values they hold.
  for (size_t i = 0; i < params.size(); ++i) {
    const auto r = static_cast<size_t>(owner_[i]);
    Variable v = params[i].second;
    const Variable w = opt_.working(i);
    Tensor& buf = w.defined() ? masters_[r] : plain_[r];
    Tensor view = buf.slice(offset_[i], offset_[i] + sizes[i]).reshape(v.shape());
    view.copy_from(v.data());
    v.data() = view;
    if (w.defined()) {
      Tensor wv = working_[r].slice(offset_[i], offset_[i] + sizes[i]).reshape(w.shape());
      wv.copy_from(w.data());
      Variable(w).data() = wv;
    }
  }
  // Without working copies there is nothing to shard: the masters are what forward reads.
  shard_masters_ = shard_masters && working_dtype != DType::kFloat32;
  if (shard_masters_)
    for (size_t r = 0; r < world; ++r)
      if (static_cast<int>(r) != comm_.rank() && masters_[r].defined())
        masters_[r].storage()->release();
}

void ZeroRedundancy::broadcast_parameters() {
  for (size_t r = 0; r < plain_.size(); ++r) {
    const int root = static_cast<int>(r);
    if (plain_[r].defined()) comm_.broadcast(plain_[r], root);
    if (!masters_[r].defined()) continue;
    if (shard_masters_ && masters_gathered_ == 0) {
      // The owner's step refreshed its working copies from its masters: they go as they are.
      comm_.broadcast(working_[r], root);
      continue;
    }
    comm_.broadcast(masters_[r], root);
    // The owner's step refreshed its own working copies; the others round the masters
    // received, as that step rounds them (to nearest even), in one launch for the lot.
    if (root != comm_.rank()) tensor::scale_cast_(masters_[r], working_[r], 1.0);
  }
}

void ZeroRedundancy::gather_masters() {
  if (!shard_masters_ || masters_gathered_++ > 0) return;
  for (size_t r = 0; r < masters_.size(); ++r) {
    if (!masters_[r].defined()) continue;
    if (static_cast<int>(r) != comm_.rank()) masters_[r].storage()->reallocate();
    comm_.broadcast(masters_[r], static_cast<int>(r));
  }
}

void ZeroRedundancy::release_masters() {
  if (!shard_masters_ || masters_gathered_ == 0 || --masters_gathered_ > 0) return;
  for (size_t r = 0; r < masters_.size(); ++r)
    if (static_cast<int>(r) != comm_.rank() && masters_[r].defined())
      masters_[r].storage()->release();
}

void ZeroRedundancy::unshard_masters() {
  if (!shard_masters_) return;
  gather_masters();
  shard_masters_ = false;  // (release_masters() has nothing to give back from now on)
  masters_gathered_ = 0;
}

void ZeroRedundancy::gather_state() {
  if (gathered_) throw std::logic_error("ZeRO: optimizer state gathered twice");
  gathered_ = true;
  const auto& params = opt_.parameters();
  if (params.empty()) return;
  const size_t slots = opt_.slot_count();
  if (slots == 0) return;  // (SGD without momentum keeps none)
  for (size_t r = 1; r < plain_.size(); ++r) {
    // The state of owner r's parameters, slot by slot, in the layout of its two buffers.
    const int64_t np = plain_[r].defined() ? plain_[r].numel() : 0;
    const int64_t nm = masters_[r].defined() ? masters_[r].numel() : 0;
    const int64_t n = np + nm;
    if (n == 0) continue;
    Tensor buf = Tensor::zeros({static_cast<int64_t>(slots) * n}, DType::kFloat32,
                               params[0].second.device());
    auto place = [&](size_t s, size_t i) {
      const int64_t at =
          static_cast<int64_t>(s) * n + (opt_.working(i).defined() ? np : 0) + offset_[i];
      return buf.slice(at, at + params[i].second.numel()).reshape(params[i].second.shape());
    };
    const bool mine = static_cast<int>(r) == comm_.rank();
    for (size_t i = 0; i < params.size() && mine; ++i)
      if (owner_[i] == static_cast<int>(r))
        for (size_t s = 0; s < slots; ++s) place(s, i).copy_from(*opt_.state_of(i)[s]);
    comm_.broadcast(buf, static_cast<int>(r));
    if (comm_.rank() != 0) continue;
    for (size_t i = 0; i < params.size(); ++i)
      if (owner_[i] == static_cast<int>(r))
        for (size_t s = 0; s < slots; ++s) *opt_.state_of(i)[s] = place(s, i).clone();
  }
}

void ZeroRedundancy::release_state() {
  if (!gathered_) return;
  gathered_ = false;
  if (comm_.rank() != 0) return;
  const auto& params = opt_.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    if (owner_[i] != 0)
      for (Tensor* t : opt_.state_of(i)) *t = Tensor();
}

int64_t ZeroRedundancy::master_bytes() const {
  int64_t bytes = 0;
  for (const auto* bufs : {&plain_, &masters_})
    for (const Tensor& t : *bufs)
      if (t.defined() && !t.released()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

int64_t ZeroRedundancy::total_master_bytes() const {
  int64_t bytes = 0;
  for (const auto* bufs : {&plain_, &masters_})
    for (const Tensor& t : *bufs)
      if (t.defined()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

int64_t ZeroRedundancy::total_state_bytes() const {
  int64_t elements = 0;
  for (const auto& [n, v] : opt_.parameters()) elements += v.numel();
  return static_cast<int64_t>(opt_.slot_count()) * elements * static_cast<int64_t>(sizeof(float));
}

}  // namespace mlai::nn
