// Streams and events. Every device has a per-thread current stream (a non-blocking stream
// created on first use, never the legacy default stream); ops enqueue on it. On the CPU a
// stream is a null handle and everything is synchronous.
#pragma once

#include <memory>

#include "kernels/common.h"
#include "tensor/device.h"

namespace mlai::tensor {

using kernels::StreamHandle;

class Stream {
 public:
  Stream() = default;  // the CPU "stream"
  static Stream create(const Device& d);  // a new non-blocking stream on d
  StreamHandle handle() const { return impl_ ? impl_->handle : nullptr; }
  Device device() const { return impl_ ? impl_->device : Device::cpu(); }
  void synchronize() const;

 private:
  struct Impl {
    Device device;
    StreamHandle handle = nullptr;
    ~Impl();
  };
  std::shared_ptr<Impl> impl_;
};

// The stream ops use on device d in this thread.
Stream current_stream(const Device& d);
void set_current_stream(const Stream& s);

// Sets the current stream for a scope, restoring the previous one.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
};

class Event {
 public:
  Event() = default;
  explicit Event(const Device& d, bool timing = false);
  void record(const Stream& s);
  void wait(const Stream& s) const;  // s waits for this event (no host block)
  void synchronize() const;          // the host waits
  bool query() const;                // true when done
  float elapsed_ms(const Event& end) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mlai::tensor
