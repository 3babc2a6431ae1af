// Tensor storage, views and copies between devices.
#include "tensor/tensor.h"

#include <cstring>
#include <sstream>
#include <stdexcept>

#include "tensor/allocator.h"
#include "tensor/ops.h"
#ifdef MLAI_WITH_CUDA
#include "tensor/cuda_backend.h"
#endif

namespace mlai::tensor {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

Storage::~Storage() {
  if (data != nullptr && deleter != nullptr) deleter(data, device.index);
}

void Storage::release() {
  if (released) return;
  if (data != nullptr && deleter != nullptr) deleter(data, device.index);
  data = nullptr;
  released = true;
}

void Storage::reallocate() {
  if (!released) return;
  const std::shared_ptr<Storage> fresh = allocate_storage(bytes, device, pinned);
  data = fresh->data;
  deleter = fresh->deleter;
  fresh->data = nullptr;  // (now this one's)
  released = false;
}

std::shared_ptr<Storage> allocate_storage(size_t bytes, const Device& d, bool pinned) {
  auto s = std::make_shared<Storage>();
  s->bytes = bytes;
  s->device = d;
  if (d.is_cuda()) {
    check_device(d);
    s->data = cuda_allocator(d.index).allocate(bytes, current_stream(d).handle());
    s->deleter = [](void* p, int dev) { cuda_allocator(dev).deallocate(p); };
  } else if (pinned) {
    s->pinned = true;
    s->data = pinned_allocator().allocate(bytes);
    s->deleter = [](void* p, int) { pinned_allocator().deallocate(p); };
  } else {
    s->data = cpu_aligned_alloc(bytes);
    s->deleter = [](void* p, int) { cpu_aligned_free(p); };
  }
  return s;
}

namespace {
Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dt, Device d, bool pinned) {
  Tensor t;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.numel_ = shape_numel(shape);
  t.dtype_ = dt;
  t.storage_ = allocate_storage(static_cast<size_t>(t.numel_) * dtype_size(dt), d, pinned);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dt, Device d) { return full(shape, 0.0, dt, d); }

Tensor Tensor::full(const Shape& shape, double value, DType dt, Device d) {
  Tensor t = empty(shape, dt, d);
  fill_(t, value);
  return t;
}

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, Generator& gen, DType dt,
                       Device d) {
  Tensor t = empty(shape, dt, d);
  uniform_(t, lo, hi, gen);
  return t;
}

Tensor Tensor::normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dt,
                      Device d) {
  Tensor t = empty(shape, dt, d);
  normal_(t, mean, stddev, gen);
  return t;
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device d) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::invalid_argument("from_vector: " + std::to_string(values.size()) +
                                " values do not fill shape " + shape_str(shape));
  Tensor host = empty(shape, dtype_of<T>(), Device::cpu());
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  return d.is_cpu() ? host : host.to(d);
}

int64_t Tensor::size(int dim) const {
  const int n = ndim();
  const int d = dim < 0 ? dim + n : dim;
  if (d < 0 || d >= n)
    throw std::out_of_range("dimension " + std::to_string(dim) + " out of range for shape " +
                            shape_str(shape_));
  return shape_[static_cast<size_t>(d)];
}

void* Tensor::data_ptr() const {
  if (!storage_) return nullptr;
  if (storage_->released)
    throw std::logic_error("Tensor" + shape_str(shape_) +
                           ": its storage is released (a shard another rank holds: gather it "
                           "first)");
  return static_cast<char*>(storage_->data) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

template <class T>
T* Tensor::data() const {
  if (dtype_of<T>() != dtype_)
    throw std::invalid_argument(std::string("data<") + dtype_name(dtype_of<T>()) + ">() on a " +
                                dtype_name(dtype_) + " tensor");
  return static_cast<T*>(data_ptr());
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0)
        throw std::invalid_argument("reshape: more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0 && known != 0) s[static_cast<size_t>(infer)] = numel_ / known;
  if (shape_numel(s) != numel_)
    throw std::invalid_argument("reshape: cannot view " + shape_str(shape_) + " as " +
                                shape_str(shape));
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::flatten(int start_dim) const {
  if (start_dim < 0) start_dim += ndim();
  if (start_dim < 0 || start_dim > ndim())
    throw std::out_of_range("flatten: start_dim out of range for " + shape_str(shape_));
  Shape s(shape_.begin(), shape_.begin() + start_dim);
  int64_t rest = 1;
  for (int i = start_dim; i < ndim(); ++i) rest *= shape_[static_cast<size_t>(i)];
  s.push_back(rest);
  return reshape(s);
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  if (ndim() == 0) throw std::invalid_argument("slice: a scalar has no rows");
  if (begin < 0 || end < begin || end > shape_[0])
    throw std::out_of_range("slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") out of range for " + shape_str(shape_));
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.offset_ = offset_ + begin * strides_[0];
  t.numel_ = shape_numel(t.shape_);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(const Device& d) const {
  if (d == device()) return *this;
  Tensor t = empty(shape_, dtype_, d);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dt) const { return dt == dtype_ ? *this : cast(*this, dt); }

void Tensor::copy_from(const Tensor& src, bool async) {
  if (src.shape_ != shape_ || src.dtype_ != dtype_)
    throw std::invalid_argument("copy_from: " + src.str() + " into " + str());
  const size_t bytes = nbytes();
  if (bytes == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memmove(data_ptr(), src.data_ptr(), bytes);
    return;
  }
#ifdef MLAI_WITH_CUDA
  // The copy runs on the current stream of the CUDA side (the destination when both are).
  // Between two buffers of one GPU it is never waited for: the stream orders it before what
  // reads the result, and a host wait per copy would stall every step (and is illegal while
  // a CUDA graph is being captured). With the host on one side, !async waits as documented.
  const Device cuda_side = device().is_cuda() ? device() : src.device();
  const bool same_gpu = device().is_cuda() && src.device() == device();
  if (device().is_cuda() && src.device().is_cuda() && !same_gpu) {
    // Another GPU's stream produced the source: the copy waits for what it has queued.
    Event produced(src.device());
    produced.record(current_stream(src.device()));
    produced.wait(current_stream(cuda_side));
  }
  cuda_backend::memcpy(data_ptr(), device().is_cuda(), src.data_ptr(), src.device().is_cuda(),
                       bytes, current_stream(cuda_side).handle(), async || same_gpu);
#else
  (void)async;
  throw std::logic_error("copy_from: CUDA tensor in a build without CUDA");
#endif
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  const Tensor host = to(Device::cpu());
  const T* p = host.data<T>();
  return std::vector<T>(p, p + numel_);
}

std::vector<double> Tensor::to_double_vector() const {
  return cast(to(Device::cpu()), DType::kFloat64).to_vector<double>();
}

double Tensor::item() const {
  if (numel_ != 1)
    throw std::invalid_argument("item() on a tensor of " + std::to_string(numel_) + " elements");
  return to_double_vector()[0];
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  return "Tensor" + shape_str(shape_) + " " + dtype_name(dtype_) + " " + device().str();
}

#define MLAI_INSTANTIATE(T)                                                            \
  template Tensor Tensor::from_vector<T>(const std::vector<T>&, const Shape&, Device); \
  template T* Tensor::data<T>() const;                                                 \
  template std::vector<T> Tensor::to_vector<T>() const;
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
MLAI_INSTANTIATE(int32_t)
MLAI_INSTANTIATE(int64_t)
MLAI_INSTANTIATE(uint8_t)
#undef MLAI_INSTANTIATE

}  // namespace mlai::tensor
