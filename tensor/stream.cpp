// Streams and events: null handles on the CPU, the CUDA runtime (via cuda_backend) on GPUs.
#include "tensor/stream.h"

#include <map>
#include <stdexcept>

#ifdef MLAI_WITH_CUDA
#include "tensor/cuda_backend.h"
#endif

namespace mlai::tensor {

Stream Stream::create(const Device& d) {
  Stream s;
  if (d.is_cpu()) return s;
  check_device(d);
#ifdef MLAI_WITH_CUDA
  s.impl_ = std::make_shared<Impl>();
  s.impl_->device = d;
  s.impl_->handle = cuda_backend::stream_create(d.index);
#endif
  return s;
}

Stream::Impl::~Impl() {
#ifdef MLAI_WITH_CUDA
  if (handle != nullptr) cuda_backend::stream_destroy(handle);
#endif
}

void Stream::synchronize() const {
#ifdef MLAI_WITH_CUDA
  if (handle() != nullptr) cuda_backend::stream_synchronize(handle());
#endif
}

namespace {
// Per-thread current streams by CUDA device index; a thread's first use of a device makes one
// stream for it. (Each thread gets its own, so data-loader threads never serialize with the
// training stream by accident.)
std::map<int, Stream>& current_streams() {
  thread_local std::map<int, Stream> streams;
  return streams;
}
}  // namespace

Stream current_stream(const Device& d) {
  if (d.is_cpu()) return Stream();
  auto& m = current_streams();
  auto it = m.find(d.index);
  if (it == m.end()) it = m.emplace(d.index, Stream::create(d)).first;
  return it->second;
}

void set_current_stream(const Stream& s) {
  if (s.device().is_cpu()) return;
  current_streams()[s.device().index] = s;
}

StreamGuard::StreamGuard(const Stream& s) : prev_(current_stream(s.device())) {
  set_current_stream(s);
}
StreamGuard::~StreamGuard() { set_current_stream(prev_); }

struct Event::Impl {
  Device device;
  void* event = nullptr;
  ~Impl() {
#ifdef MLAI_WITH_CUDA
    if (event != nullptr) cuda_backend::event_destroy(event);
#endif
  }
};

Event::Event(const Device& d, bool timing) : impl_(std::make_shared<Impl>()) {
  impl_->device = d;
#ifdef MLAI_WITH_CUDA
  if (d.is_cuda()) impl_->event = cuda_backend::event_create(d.index, timing);
#else
  (void)timing;
#endif
}

void Event::record(const Stream& s) {
#ifdef MLAI_WITH_CUDA
  if (impl_ && impl_->event) cuda_backend::event_record(impl_->event, s.handle());
#else
  (void)s;
#endif
}

void Event::wait(const Stream& s) const {
#ifdef MLAI_WITH_CUDA
  if (impl_ && impl_->event && s.handle()) cuda_backend::event_wait(impl_->event, s.handle());
#else
  (void)s;
#endif
}

void Event::synchronize() const {
#ifdef MLAI_WITH_CUDA
  if (impl_ && impl_->event) cuda_backend::event_synchronize(impl_->event);
#endif
}

bool Event::query() const {
#ifdef MLAI_WITH_CUDA
  if (impl_ && impl_->event) return cuda_backend::event_query(impl_->event);
#endif
  return true;
}

float Event::elapsed_ms(const Event& end) const {
#ifdef MLAI_WITH_CUDA
  if (impl_ && impl_->event && end.impl_ && end.impl_->event)
    return cuda_backend::event_elapsed_ms(impl_->event, end.impl_->event);
#else
  (void)end;
#endif
  throw std::runtime_error("Event::elapsed_ms needs two CUDA timing events");
}

}  // namespace mlai::tensor
