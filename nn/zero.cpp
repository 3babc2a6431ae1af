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

ZeroRedundancy::ZeroRedundancy(Optimizer& opt, dist::Communicator& comm) : opt_(opt), comm_(comm) {
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
  std::vector<int64_t> used(world, 0);
  offset_.assign(params.size(), 0);
  for (size_t i = 0; i < params.size(); ++i) {
    int64_t& u = used[static_cast<size_t>(owner_[i])];
    offset_[i] = u;
    u += (sizes[i] + kAlign - 1) / kAlign * kAlign;
  }
  flat_.resize(world);
  flat_working_.resize(world);
  for (size_t r = 0; r < world; ++r) {
    if (used[r] == 0) continue;  // (more ranks than parameters)
    flat_[r] = Tensor::zeros({used[r]}, DType::kFloat32, params[0].second.device());
    for (size_t i = 0; i < params.size(); ++i) {
      const Variable w = opt_.working(i);
      if (owner_[i] == static_cast<int>(r) && w.defined() && !flat_working_[r].defined())
        flat_working_[r] = Tensor::zeros({used[r]}, w.dtype(), w.device());
    }
  }
  // The parameters become views of their owner's buffers, with the values they hold.
  for (size_t i = 0; i < params.size(); ++i) {
    const auto r = static_cast<size_t>(owner_[i]);
    Variable v = params[i].second;
    Tensor view = flat_[r].slice(offset_[i], offset_[i] + sizes[i]).reshape(v.shape());
    view.copy_from(v.data());
    v.data() = view;
    if (Variable w = opt_.working(i); w.defined()) {
      if (w.dtype() != flat_working_[r].dtype())
        throw std::invalid_argument("ZeRO: working copies of more than one dtype");
      Tensor wv = flat_working_[r].slice(offset_[i], offset_[i] + sizes[i]).reshape(w.shape());
      wv.copy_from(w.data());
      w.data() = wv;
    }
  }
}

void ZeroRedundancy::broadcast_parameters() {
  for (size_t r = 0; r < flat_.size(); ++r) {
    if (!flat_[r].defined()) continue;
    comm_.broadcast(flat_[r], static_cast<int>(r));
    // The owner's step refreshed its own working copies; the others round the masters
    // received, as that step rounds them (to nearest even), in one launch for the lot.
    if (static_cast<int>(r) != comm_.rank() && flat_working_[r].defined())
      tensor::scale_cast_(flat_[r], flat_working_[r], 1.0);
  }
}

void ZeroRedundancy::gather_state() {
  if (gathered_) throw std::logic_error("ZeRO: optimizer state gathered twice");
  gathered_ = true;
  const auto& params = opt_.parameters();
  if (params.empty()) return;
  const size_t slots = opt_.slot_count();
  if (slots == 0) return;  // (SGD without momentum keeps none)
  for (size_t r = 1; r < flat_.size(); ++r) {
    if (!flat_[r].defined()) continue;
    const int64_t n = flat_[r].numel();
    Tensor buf =
        Tensor::zeros({static_cast<int64_t>(slots) * n}, DType::kFloat32, flat_[r].device());
    auto place = [&](size_t s, size_t i) {
      const int64_t at = static_cast<int64_t>(s) * n + offset_[i];
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

int64_t ZeroRedundancy::total_state_bytes() const {
  int64_t elements = 0;
  for (const auto& [n, v] : opt_.parameters()) elements += v.numel();
  return static_cast<int64_t>(opt_.slot_count()) * elements * static_cast<int64_t>(sizeof(float));
}

}  // namespace mlai::nn
