// CudaGraph (see cuda_graph.h): the allocator pool around a capture; the CUDA calls are in
// cuda_graph_cuda.cpp behind cuda_backend.h.
#include "tensor/cuda_graph.h"

#include <stdexcept>
#include <string>

#include "tensor/allocator.h"
#ifdef MLAI_WITH_CUDA
#include "tensor/cuda_backend.h"
#endif

namespace mlai::tensor {

void CudaGraph::capture(const Device& d, const std::function<void()>& fn) {
  if (!d.is_cuda()) throw std::invalid_argument("CUDA graphs need a CUDA device, not " + d.str());
  check_device(d);
  if (captured()) throw std::logic_error("CudaGraph: already captured");
#ifdef MLAI_DEBUG_SYNC
  // Debug builds synchronize the device after every kernel launch, which a capture forbids.
  throw std::runtime_error("CUDA graphs do not work in a Debug build (MLAI_DEBUG_SYNC "
                           "synchronizes after every kernel): build Release to use them");
#endif
  device_ = d;
#ifdef MLAI_WITH_CUDA
  const StreamHandle s = current_stream(d).handle();
  CachingAllocator& alloc = cuda_allocator(d.index);
  const StreamHandle pool = CachingAllocator::new_pool_tag();
  alloc.open_pool(s, pool);
  try {
    cuda_backend::capture_begin(s);
    fn();
    exec_ = cuda_backend::capture_end(s);
  } catch (...) {
    // Nothing of a failed capture may stay behind: the capture is ended (even when an illegal
    // call invalidated it), the pool closed and its memory released.
    cuda_backend::capture_abort(s);
    alloc.close_pool(s);
    alloc.retire_pool(pool);
    throw;
  }
  alloc.close_pool(s);
  pool_ = pool;
#else
  (void)fn;
#endif
}

void CudaGraph::replay() const {
  if (!captured()) throw std::logic_error("CudaGraph: replay before capture");
#ifdef MLAI_WITH_CUDA
  cuda_backend::graph_launch(exec_, current_stream(device_).handle());
#endif
}

CudaGraph::~CudaGraph() {
#ifdef MLAI_WITH_CUDA
  if (pool_ == nullptr) return;
  // The last replay must finish before the pool's memory can go back to the device.
  if (exec_ != nullptr) cuda_backend::stream_synchronize_noexcept(current_stream(device_).handle());
  cuda_backend::graph_destroy(exec_);
  cuda_allocator(device_.index).retire_pool(pool_);
#endif
}

bool capturing(const Device& d) {
#ifdef MLAI_WITH_CUDA
  if (d.is_cuda()) return cuda_backend::stream_capturing(current_stream(d).handle());
#endif
  (void)d;
  return false;
}

}  // namespace mlai::tensor
