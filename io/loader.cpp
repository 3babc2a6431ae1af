// The batch loader (see loader.h).
#include "io/loader.h"

#include <stdexcept>

#include "tensor/ops.h"

namespace mlai::io {

std::vector<int64_t> epoch_indices(int64_t n, bool shuffle, uint64_t seed, int64_t epoch,
                                   int rank, int world, bool pad) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument("loader: bad rank " + std::to_string(rank) + " of " +
                                std::to_string(world));
  std::vector<int64_t> order;
  if (shuffle) {
    order = permutation(n, seed * 1000003ull + static_cast<uint64_t>(epoch));
  } else {
    order.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  }
  // Pad (repeating from the start) so every rank gets the same count, as DistributedSampler.
  const int64_t per_rank = (n + world - 1) / world;
  for (int64_t i = 0; pad && static_cast<int64_t>(order.size()) < per_rank * world && n > 0; ++i)
    order.push_back(order[static_cast<size_t>(i % n)]);
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < static_cast<int64_t>(order.size()); i += world)
    mine.push_back(order[static_cast<size_t>(i)]);
  return mine;
}

Loader::Loader(const Dataset& ds, const LoaderOptions& opt) : ds_(ds), opt_(opt) {
  if (opt.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
  if (opt.workers < 0) throw std::invalid_argument("--workers must be >= 0");
  if (opt.prefetch < 1) throw std::invalid_argument("prefetch depth must be >= 1");
}

Loader::~Loader() { stop(); }

int64_t Loader::num_batches() const {
  // Samples this rank visits: with padding every rank has ceil(n / world), without it the
  // first n % world ranks have one more.
  const int64_t n = opt_.pad ? (ds_.count + opt_.world - 1) / opt_.world
                             : (ds_.count - opt_.rank + opt_.world - 1) / opt_.world;
  int64_t b = opt_.drop_last ? n / opt_.batch_size : (n + opt_.batch_size - 1) / opt_.batch_size;
  if (opt_.limit_batches >= 0 && opt_.limit_batches < b) b = opt_.limit_batches;
  return b;
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop();
  indices_ = epoch_indices(ds_.count, opt_.shuffle, opt_.seed, epoch, opt_.rank, opt_.world,
                           opt_.pad);
  next_ = first_batch;
  first_batch_ = first_batch;  // fixed before the workers start
  ready_.clear();
  error_ = nullptr;
  stopping_ = false;
  for (int w = 0; w < opt_.workers; ++w) threads_.emplace_back(&Loader::worker_loop, this, w);
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

Batch Loader::assemble(int64_t b) const {
  const int64_t start = b * opt_.batch_size;
  const int64_t end = std::min<int64_t>(start + opt_.batch_size, num_samples());
  const int64_t rows = end - start, sb = ds_.sample_bytes(), c = ds_.channels;
  Batch batch;
  batch.index = b;
  batch.images = tensor::Tensor::empty({rows, ds_.height, ds_.width, c});
  batch.labels = tensor::Tensor::empty({rows}, tensor::DType::kInt64);
  float* img = batch.images.data<float>();
  int64_t* lab = batch.labels.data<int64_t>();
  std::vector<float> inv_std(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
  for (int64_t k = 0; k < c; ++k) {
    inv_std[k] = 1.0f / (255.0f * ds_.std[static_cast<size_t>(k)]);
    shift[k] = ds_.mean[static_cast<size_t>(k)] / ds_.std[static_cast<size_t>(k)];
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = indices_[static_cast<size_t>(start + r)];
    const uint8_t* src = &ds_.images[static_cast<size_t>(i * sb)];
    float* dst = img + r * sb;
    for (int64_t p = 0; p < sb; ++p) dst[p] = src[p] * inv_std[p % c] - shift[p % c];
    lab[r] = ds_.labels[static_cast<size_t>(i)];
  }
  return batch;
}

void Loader::worker_loop(int w) {
  const int64_t total = num_batches();
  for (int64_t b = first_batch_ + w; b < total; b += opt_.workers) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || b - next_ < opt_.prefetch; });
      if (stopping_) return;
    }
    Batch batch;
    try {
      batch = assemble(b);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ready_.emplace(b, std::move(batch));
    cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  if (next_ >= num_batches()) return std::nullopt;
  Batch batch;
  if (opt_.workers == 0) {
    batch = assemble(next_);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return error_ || ready_.count(next_) > 0; });
    if (error_) std::rethrow_exception(error_);
    batch = std::move(ready_.at(next_));
    ready_.erase(next_);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);  // workers read next_ to bound their window
    ++next_;
  }
  cv_.notify_all();
  if (!opt_.device.is_cpu()) {
    batch.images = batch.images.to(opt_.device);
    batch.labels = batch.labels.to(opt_.device);
  }
  return batch;
}

}  // namespace mlai::io
