// The batch loader (see loader.h).
#include "io/loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/augment.h"
#include "kernels/parallel.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"
#include "tensor/trace.h"

namespace mlai::io {

std::vector<int64_t> epoch_indices(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, int rank,
                                   int world, bool pad, int64_t skip) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument("loader: bad rank " + std::to_string(rank) + " of " +
                                std::to_string(world));
  if (skip < 0) throw std::invalid_argument("loader: negative sample offset");
  std::vector<int64_t> order;
  if (shuffle) {
    order = permutation(n, seed * 1000003ull + static_cast<uint64_t>(epoch));
  } else {
    order.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  }
  // The rest of the order, padded (repeating from its start) so every rank gets the same count,
  // as DistributedSampler pads.
  const int64_t rest = std::max<int64_t>(n - skip, 0);
  const int64_t per_rank = (rest + world - 1) / world;
  const int64_t len = pad && n > 0 ? per_rank * world : rest;
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < len; i += world)
    mine.push_back(i < rest ? order[static_cast<size_t>(skip + i)]
                            : order[static_cast<size_t>((i - rest) % n)]);
  return mine;
}

Loader::Loader(const Dataset& ds, const LoaderOptions& opt) : ds_(ds), opt_(opt) {
  if (opt.batch_size < 1) throw std::invalid_argument("--batch-size must be >= 1");
  if (opt.workers < 0) throw std::invalid_argument("--workers must be >= 0");
  if (opt.prefetch < 1) throw std::invalid_argument("prefetch depth must be >= 1");
}

Loader::~Loader() {
  stop();
  release_copied(true);
}

void Loader::release_copied(bool all) {
  // A batch staged but not handed out (an early stop, an exception) still has its copy going.
  if (all && staged_) {
    in_flight_.emplace_back(staged_->copied, std::move(staged_->host));
    staged_.reset();
  }
  while (!in_flight_.empty() && (all || in_flight_.front().first.query() ||
                                 static_cast<int64_t>(in_flight_.size()) > opt_.prefetch)) {
    in_flight_.front().first.synchronize();  // at once when query() said done
    in_flight_.pop_front();
  }
}

int64_t Loader::rank_samples(int64_t skip) const {
  // With padding every rank has ceil(rest / world), without it the first rest % world ranks
  // have one more.
  const int64_t rest = std::max<int64_t>(ds_.count - skip, 0), w = opt_.world;
  return opt_.pad ? (rest + w - 1) / w : (rest - opt_.rank + w - 1) / w;
}

int64_t Loader::batches_of(int64_t samples) const {
  return opt_.drop_last ? samples / opt_.batch_size
                        : (samples + opt_.batch_size - 1) / opt_.batch_size;
}

int64_t Loader::num_batches() const {
  int64_t b = batches_of(rank_samples(0));
  if (opt_.limit_batches >= 0 && opt_.limit_batches < b) b = opt_.limit_batches;
  return b;
}

int64_t Loader::first_batch_at(int64_t samples_done) const {
  // The batches left are numbered so that the epoch's last keeps its number: its end, the
  // validation schedule and --limit-train-batches stay where they were. For samples_done a
  // multiple of world x batch this is samples_done / (world x batch).
  return batches_of(rank_samples(0)) - batches_of(rank_samples(std::min(samples_done, ds_.count)));
}

int64_t Loader::samples_before(int64_t b) const {
  return skip_ + (b - first_batch_) * opt_.batch_size * opt_.world;
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  start_epoch_at(epoch, first_batch * opt_.batch_size * opt_.world);
}

int64_t Loader::start_epoch_at(int64_t epoch, int64_t samples_done) {
  stop();
  skip_ = std::clamp<int64_t>(samples_done, 0, ds_.count);
  indices_ = epoch_indices(ds_.count, opt_.shuffle, opt_.seed, epoch, opt_.rank, opt_.world,
                           opt_.pad, skip_);
  first_batch_ = first_batch_at(skip_);  // fixed before the workers start
  next_ = first_batch_;
  epoch_ = epoch;
  pinned_ = opt_.device.is_cuda();  // page-locked host memory: truly asynchronous copies
  if (pinned_ && !copy_stream_.handle()) copy_stream_ = tensor::Stream::create(opt_.device);
  release_copied(true);
  ready_.clear();
  error_ = nullptr;
  stopping_ = false;
  for (int w = 0; w < opt_.workers; ++w) threads_.emplace_back(&Loader::worker_loop, this, w);
  return first_batch_;
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

Loader::HostBatch Loader::assemble(int64_t b) const {
  const int64_t start = (b - first_batch_) * opt_.batch_size;
  const int64_t end = std::min<int64_t>(start + opt_.batch_size, num_samples());
  const int64_t rows = end - start, sb = ds_.sample_bytes();
  HostBatch h;
  h.index = b;
  h.pixels = tensor::Tensor::empty({rows, ds_.height, ds_.width, ds_.channels},
                                   tensor::DType::kUInt8, tensor::Device::cpu(), pinned_);
  h.labels = tensor::Tensor::empty({rows}, tensor::DType::kInt64, tensor::Device::cpu(), pinned_);
  h.ids = tensor::Tensor::empty({rows}, tensor::DType::kInt64, tensor::Device::cpu(), pinned_);
  uint8_t* px = h.pixels.data<uint8_t>();
  int64_t* lab = h.labels.data<int64_t>();
  int64_t* ids = h.ids.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = indices_[static_cast<size_t>(start + r)];
    ids[r] = i;
    if (ds_.source) {  // streaming from a file
      try {
        lab[r] = ds_.source->read(ds_.source_row(i), px + r * sb);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string(e.what()) + " (sample " + std::to_string(i) + " of " +
                                 ds_.name + ", batch " + std::to_string(b) + ")");
      }
    } else {
      std::memcpy(px + r * sb, &ds_.images[static_cast<size_t>(i * sb)], static_cast<size_t>(sb));
      lab[r] = ds_.labels[static_cast<size_t>(i)];
    }
  }
  return h;
}

void Loader::worker_loop(int w) {
  // A new thread's CUDA calls (the pinned allocations) would otherwise go to device 0, making
  // a context there for every rank of the node.
  if (opt_.device.is_cuda()) tensor::set_current_device(opt_.device);
  // Workers are threads already: their CPU kernels (augmentation) run inline, leaving the kernel
  // thread pool to the training thread.
  kernels::cpu::set_max_threads(1);
  const int64_t total = num_batches();
  for (int64_t b = first_batch_ + w; b < total; b += opt_.workers) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || b - next_ < opt_.prefetch; });
      if (stopping_) return;
    }
    HostBatch batch;
    try {
      trace::Span span([b] { return "batch " + std::to_string(b); }, "data",
                       trace::kWorkerTrack + w);
      batch = assemble(b);
      if (opt_.device.is_cpu()) batch.images = finish(batch).images;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_ || b < error_batch_) {
        error_ = std::current_exception();
        error_batch_ = b;
      }
      cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ready_.emplace(b, std::move(batch));
    cv_.notify_all();
  }
}

Loader::HostBatch Loader::take(int64_t b) {
  HostBatch h;
  if (opt_.workers == 0) {
    trace::Span span([b] { return "batch " + std::to_string(b); }, "data");
    h = assemble(b);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    // Batches before a failed one are still delivered: the error surfaces in order.
    cv_.wait(lock, [&] { return ready_.count(b) > 0 || (error_ && error_batch_ <= b); });
    if (ready_.count(b) == 0) std::rethrow_exception(error_);
    h = std::move(ready_.at(b));
    ready_.erase(b);
  }
  return h;
}

Loader::Staged Loader::stage(HostBatch&& h) {
  // Device buffers come from the compute stream's pool (they are freed in its order); the
  // copy stream first waits for the compute work queued so far, which may still read memory
  // the pool hands out again.
  Staged s;
  const tensor::Device dev = opt_.device;
  s.device.index = h.index;
  s.device.pixels = tensor::Tensor::empty(h.pixels.shape(), tensor::DType::kUInt8, dev);
  s.device.labels = tensor::Tensor::empty(h.labels.shape(), tensor::DType::kInt64, dev);
  s.device.ids = tensor::Tensor::empty(h.ids.shape(), tensor::DType::kInt64, dev);
  tensor::Event compute_so_far(dev);
  compute_so_far.record(tensor::current_stream(dev));
  compute_so_far.wait(copy_stream_);
  try {
    tensor::StreamGuard on_copy(copy_stream_);
    s.device.pixels.copy_from(h.pixels, /*async=*/true);
    s.device.labels.copy_from(h.labels, true);
    s.device.ids.copy_from(h.ids, true);
  } catch (...) {
    // Copies already queued still read h's pinned buffers and write s's: let them finish
    // before either is released.
    copy_stream_.synchronize();
    throw;
  }
  s.copied = tensor::Event(dev);
  s.copied.record(copy_stream_);
  s.host = std::move(h);
  return s;
}

Batch Loader::finish(const HostBatch& h) {
  kernels::AugmentParams p;
  p.batch = h.pixels.size(0);
  p.height = ds_.height;
  p.width = ds_.width;
  p.channels = ds_.channels;
  p.pad = opt_.augment_pad;
  p.flip = opt_.augment_flip;
  p.resized_crop = opt_.augment_resized_crop;
  p.scale_lo = opt_.rrc_scale[0];
  p.scale_hi = opt_.rrc_scale[1];
  p.log_ratio_lo = std::log(opt_.rrc_ratio[0]);
  p.log_ratio_hi = std::log(opt_.rrc_ratio[1]);
  p.erase_p = opt_.erase_p;
  p.erase_scale_lo = opt_.erase_scale[0];
  p.erase_scale_hi = opt_.erase_scale[1];
  p.erase_log_ratio_lo = std::log(opt_.erase_ratio[0]);
  p.erase_log_ratio_hi = std::log(opt_.erase_ratio[1]);
  p.seed = opt_.seed;
  p.epoch = epoch_;
  for (int64_t c = 0; c < ds_.channels; ++c) {
    p.mean[c] = ds_.mean[static_cast<size_t>(c)];
    p.inv_std[c] = 1.0f / ds_.std[static_cast<size_t>(c)];
  }
  Batch out;
  out.index = h.index;
  if (opt_.auto_augment == kernels::AutoAugmentPolicy::kNone) {
    out.images = tensor::augment_normalize(h.pixels, h.ids, p, opt_.dtype);
  } else {
    // torchvision's order: the crop and flip (rounded to uint8 pixels), the automatic
    // augmentation, then the normalization and RandomErasing (the same boxes as without it).
    tensor::Tensor pixels = h.pixels;
    if (p.pad > 0 || p.flip || p.resized_crop) {
      kernels::AugmentParams crop = p;
      crop.erase_p = 0;
      pixels = tensor::augment_normalize(pixels, h.ids, crop, tensor::DType::kUInt8);
    }
    kernels::AutoAugmentParams a;
    a.batch = p.batch;
    a.height = p.height;
    a.width = p.width;
    a.channels = p.channels;
    a.policy = opt_.auto_augment;
    a.num_ops = opt_.ra_num_ops;
    a.magnitude = opt_.ra_magnitude;
    a.severity = opt_.augmix_severity;
    a.seed = opt_.seed;
    a.epoch = epoch_;
    pixels = tensor::auto_augment(pixels, h.ids, a);
    p.pad = 0;
    p.flip = false;
    p.resized_crop = false;
    out.images = tensor::augment_normalize(pixels, h.ids, p, opt_.dtype);
  }
  out.labels = h.labels;
  return out;
}

std::optional<Batch> Loader::next() {
  const int64_t total = num_batches();
  if (next_ >= total) return std::nullopt;
  const int64_t b = next_;
  {
    std::lock_guard<std::mutex> lock(mu_);  // workers read next_ to bound their window
    ++next_;
  }
  cv_.notify_all();
  if (opt_.device.is_cpu()) {
    HostBatch h = take(b);
    if (!h.images.defined()) return finish(h);  // no workers: augment here
    Batch out;
    out.index = h.index;
    out.images = std::move(h.images);
    out.labels = std::move(h.labels);
    return out;
  }
  // GPU: batch b was staged by the previous call (or is staged now); batch b + 1 is sent on
  // its way before b is handed out, so its copy overlaps b's step.
  if (!staged_ || staged_->device.index != b) staged_ = stage(take(b));
  Staged current = std::move(*staged_);
  staged_.reset();
  // Before anything below can throw (staging b + 1 may rethrow a worker's error): the compute
  // stream, which frees b's device buffers, waits for their copy, and the pinned host buffers
  // are kept until it is done (no host wait here unless more than `prefetch` copies are still
  // outstanding).
  current.copied.wait(tensor::current_stream(opt_.device));
  in_flight_.emplace_back(current.copied, std::move(current.host));
  if (b + 1 < total) staged_ = stage(take(b + 1));
  Batch out = finish(current.device);
  release_copied(false);
  return out;
}

}  // namespace mlai::io
