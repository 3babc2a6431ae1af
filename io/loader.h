// Batches from a Dataset: a per-epoch seeded shuffle, sharded across data-parallel ranks (each
// rank takes every world-th sample of the padded order, so all ranks run the same number of
// steps). `workers` threads assemble whole batches of raw uint8 pixels (into pinned host memory
// when the device is a GPU) within a window of `prefetch` batches; the trainer takes them in
// order. On a GPU the uint8 batch is copied asynchronously on a copy stream one batch ahead,
// and augmentation + normalisation run as a kernel on the compute stream (the CPU twin on the
// CPU). For a given seed the batches are identical whatever the number of workers.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "io/dataset.h"
#include "kernels/auto_augment.h"
#include "tensor/tensor.h"

namespace mlai::io {

struct Batch {
  tensor::Tensor images;  // float32 [B, H, W, C], augmented and normalized, on the device
  tensor::Tensor labels;  // int64 [B], on the device
  int64_t index = 0;      // batch number within the epoch
};

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int workers = 0;  // 0: batches are assembled by the calling thread
  int prefetch = 4;
  int64_t limit_batches = -1;  // < 0: all
  int augment_pad = 0;         // random crop from a zero-padded image (0: none)
  bool augment_flip = false;   // random horizontal flip
  // RandomResizedCrop at the image's size instead of the padded crop (kernels/augment.h).
  bool augment_resized_crop = false;
  double rrc_scale[2] = {0.08, 1.0};
  double rrc_ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
  // torchvision's TrivialAugmentWide / RandAugment / AutoAugment on the uint8 crop, before the
  // normalization (kernels/auto_augment.h).
  kernels::AutoAugmentPolicy auto_augment = kernels::AutoAugmentPolicy::kNone;
  int ra_num_ops = 2, ra_magnitude = 9, augmix_severity = 3;
  // RandomErasing after the normalization (kernels/augment.h): probability, area share, ratio.
  double erase_p = 0;
  double erase_scale[2] = {0.02, 0.33};
  double erase_ratio[2] = {0.3, 3.3};
  int rank = 0, world = 1;
  // Training pads the shard order so all ranks take the same number of steps; evaluation
  // does not, so every sample is counted exactly once across ranks.
  bool pad = true;
  tensor::Device device = tensor::Device::cpu();
  // Images come out normalized in this dtype (float16/bfloat16 under mixed precision: the
  // augmentation kernel writes them directly, no separate cast).
  tensor::DType dtype = tensor::DType::kFloat32;
};

// The sample indices rank `rank` of `world` visits in `epoch` after the first `skip` positions
// of the epoch's order (exposed for tests). The rest of the order is dealt out round-robin, as
// DistributedSampler deals the whole of it, padded with the order's first samples; with `skip`
// a multiple of the world size this is the tail of the shard without `skip`, which is what lets
// a run resume on another number of ranks or batch size (Loader::start_epoch_at).
std::vector<int64_t> epoch_indices(int64_t n, bool shuffle, uint64_t seed, int64_t epoch, int rank,
                                   int world, bool pad = true, int64_t skip = 0);

class Loader {
 public:
  Loader(const Dataset& ds, const LoaderOptions& opt);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t num_batches() const;
  int64_t num_samples() const { return static_cast<int64_t>(indices_.size()); }
  // Starts `epoch` at batch `first_batch` (a resumed run skips what it already trained on).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // Starts `epoch` after the first `samples_done` samples of its order, all ranks together
  // (what a checkpoint records): the rest is dealt out over this loader's ranks and batch size,
  // whatever those were when the checkpoint was written. Batches keep the epoch's numbering:
  // the first is first_batch_at(samples_done), returned, and the last num_batches() - 1.
  int64_t start_epoch_at(int64_t epoch, int64_t samples_done);
  int64_t first_batch_at(int64_t samples_done) const;
  // The samples of the epoch's order done, all ranks together, once batches before `b` have run.
  int64_t samples_before(int64_t b) const;
  // The next batch of this epoch in order, or nullopt at its end. A worker's exception is
  // rethrown here.
  std::optional<Batch> next();
  int64_t epoch() const { return epoch_; }
  void stop();  // joins the workers; safe to call twice

 private:
  struct HostBatch {
    tensor::Tensor pixels, labels, ids;  // uint8 [B, H, W, C], int64 [B], int64 [B]
    // CPU backend with workers: the augmented, normalized images, made by the worker so that
    // augmentation scales with --workers (undefined otherwise: finish() makes them).
    tensor::Tensor images;
    int64_t index = -1;
  };
  // A batch copied to the GPU: its tensors and the event the copy records.
  struct Staged {
    HostBatch host;  // kept until the copy is done
    HostBatch device;
    tensor::Event copied;
  };
  HostBatch assemble(int64_t b) const;
  int64_t batches_of(int64_t samples) const;  // batches for a rank with this many samples
  int64_t rank_samples(int64_t skip) const;   // this rank's samples after `skip` positions
  HostBatch take(int64_t b);  // the host batch b, from a worker or assembled here
  Staged stage(HostBatch&& h);
  Batch finish(const HostBatch& on_device);
  void worker_loop(int w);

  const Dataset& ds_;
  LoaderOptions opt_;
  std::vector<int64_t> indices_;
  int64_t next_ = 0;
  int64_t first_batch_ = 0;
  int64_t skip_ = 0;  // positions of the epoch's order before indices_ (start_epoch_at)
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, HostBatch> ready_;
  int64_t epoch_ = 0;
  bool pinned_ = false;
  tensor::Stream copy_stream_;
  std::optional<Staged> staged_;  // the next batch, already on its way to the GPU
  // Pinned host batches whose copy to the GPU may still be reading them, with the copy's
  // event: released once done (checked without waiting), waited for only beyond `prefetch`.
  std::deque<std::pair<tensor::Event, HostBatch>> in_flight_;
  void release_copied(bool all);  // all: wait for every copy (epoch start, destruction)
  std::exception_ptr error_;
  int64_t error_batch_ = 0;  // the batch whose assembly failed
  bool stopping_ = false;
};

}  // namespace mlai::io
