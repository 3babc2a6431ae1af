// CUDA graphs (--cuda-graphs): the work a function enqueues on a device's current stream,
// captured once and replayed with a single launch, so a step of many small kernels costs one
// launch of host time. While capturing, the device's caching allocator serves that stream from
// a pool of the graph's own (tensor/allocator.h), so the addresses baked into the graph stay
// the graph's; everything the function computes from host values (sizes, scalars, pointers) is
// fixed at capture. Throws a clear error on the CPU or in a build without CUDA.
#pragma once

#include <functional>

#include "tensor/device.h"
#include "tensor/stream.h"

namespace mlai::tensor {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Records (does not run) what fn enqueues on the current stream of d. fn must not wait for
  // the device (no item(), no synchronize) and must enqueue everything on that stream.
  void capture(const Device& d, const std::function<void()>& fn);
  // Runs the captured work on the current stream of the captured device.
  void replay() const;
  bool captured() const { return exec_ != nullptr; }

 private:
  Device device_ = Device::cpu();
  void* exec_ = nullptr;
  StreamHandle pool_ = nullptr;
};

// True while the current stream of d is being captured (ops that must not be baked into a
// graph, like a host-counted buffer update, check it). Always false on the CPU.
bool capturing(const Device& d);

}  // namespace mlai::tensor
