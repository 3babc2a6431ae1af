// Tensor: a shape, strides and dtype over shared storage on a device. Tensors are contiguous;
// reshape/flatten/slice along dim 0 are views sharing the storage. Copies between devices go
// through copy_from (sync, or async on a stream).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/stream.h"

namespace mlai::tensor {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

// Owns one allocation; the deleter returns it to its allocator.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  bool pinned = false;
  void (*deleter)(void* data, int device) = nullptr;
  // release() hands the allocation back while every tensor over it keeps its shape (FSDP's
  // storage resize to 0: a ZeRO shard that another rank holds); reading such a tensor is an
  // error until reallocate() gives it fresh memory (same size, device and kind; the old values
  // are gone), which every view then sees.
  bool released = false;
  void release();
  void reallocate();
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

// bytes on `d` (pinned: page-locked host memory, for async host<->device copies).
std::shared_ptr<Storage> allocate_storage(size_t bytes, const Device& d, bool pinned = false);

class Generator;

class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  static Tensor empty(const Shape& shape, DType dt = DType::kFloat32, Device d = Device::cpu(),
                      bool pinned = false);
  static Tensor zeros(const Shape& shape, DType dt = DType::kFloat32, Device d = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dt = DType::kFloat32,
                     Device d = Device::cpu());
  static Tensor uniform(const Shape& shape, double lo, double hi, Generator& gen,
                        DType dt = DType::kFloat32, Device d = Device::cpu());
  static Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen,
                       DType dt = DType::kFloat32, Device d = Device::cpu());
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            Device d = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t size(int dim) const;  // negative dims count from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  const Shape& strides() const { return strides_; }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::cpu(); }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool is_contiguous() const { return true; }  // every tensor here is (views keep it so)
  bool is_pinned() const { return storage_ && storage_->pinned; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }
  // Whether its storage was released (Storage::release): data_ptr() then throws.
  bool released() const { return storage_ && storage_->released; }

  void* data_ptr() const;
  template <class T>
  T* data() const;  // checks the dtype

  // Views (share storage).
  Tensor reshape(const Shape& shape) const;        // one dim may be -1
  Tensor flatten(int start_dim = 1) const;         // dims [start_dim, ndim) into one
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0

  // New tensors.
  Tensor clone() const;
  Tensor to(const Device& d) const;  // synchronous; returns *this when already there
  Tensor to(DType dt) const;         // cast; returns *this when already that dtype
  // Copies src (same shape and dtype, any device) into this tensor. With async, the copy is
  // enqueued on the current stream of the CUDA side and returns at once (use pinned host memory).
  // A copy between two buffers of one GPU is always enqueued without a host wait (the stream
  // orders it), so clone() of a CUDA tensor never blocks.
  void copy_from(const Tensor& src, bool async = false);

  template <class T>
  std::vector<T> to_vector() const;              // copies to the host; dtype must be T
  std::vector<double> to_double_vector() const;  // any dtype, for tests and logs
  double item() const;                           // one element, as double

  std::string str() const;  // "Tensor[2, 3] float32 cpu"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  Shape strides_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kFloat32;
};

// Seeded, reproducible random state: a seed and a counter that advances by the number of
// values drawn. CPU and CUDA draw the same numbers (kernels/fill.h).
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  uint64_t advance(uint64_t n) {  // returns the offset to use, then moves past n values
    const uint64_t o = offset_;
    offset_ += n;
    return o;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace mlai::tensor
