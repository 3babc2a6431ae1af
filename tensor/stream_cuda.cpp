// CUDA streams and events behind tensor/cuda_backend.h. Streams are non-blocking (they never
// synchronize with the legacy default stream). Destroy calls run from destructors, so they
// report nothing and never throw (at process exit the runtime may already be unloading).
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#include "tensor/cuda_backend.h"

namespace mlai::tensor::cuda_backend {

namespace {
cudaEvent_t ev(void* e) { return static_cast<cudaEvent_t>(e); }
}  // namespace

StreamHandle stream_create(int device) {
  kernels::detail::DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  MLAI_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void stream_destroy(StreamHandle s) {
  if (s != nullptr) (void)cudaStreamDestroy(s);
}

void stream_synchronize(StreamHandle s) { MLAI_CUDA_CHECK(cudaStreamSynchronize(s)); }

void* event_create(int device, bool timing) {
  kernels::detail::DeviceGuard guard(device);
  cudaEvent_t e = nullptr;
  MLAI_CUDA_CHECK(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  return e;
}

void event_destroy(void* e) {
  if (e != nullptr) (void)cudaEventDestroy(ev(e));
}

void event_record(void* e, StreamHandle s) { MLAI_CUDA_CHECK(cudaEventRecord(ev(e), s)); }

void event_wait(void* e, StreamHandle s) { MLAI_CUDA_CHECK(cudaStreamWaitEvent(s, ev(e), 0)); }

void event_synchronize(void* e) { MLAI_CUDA_CHECK(cudaEventSynchronize(ev(e))); }

bool event_query(void* e) {
  const cudaError_t err = cudaEventQuery(ev(e));
  if (err == cudaErrorNotReady) return false;
  if (err != cudaSuccess)
    kernels::detail::throw_call_error("CUDA", "cudaEventQuery", __FILE__, __LINE__,
                                      static_cast<int>(err), cudaGetErrorString(err));
  return true;
}

float event_elapsed_ms(void* start, void* end) {
  float ms = 0;
  MLAI_CUDA_CHECK(cudaEventElapsedTime(&ms, ev(start), ev(end)));
  return ms;
}

}  // namespace mlai::tensor::cuda_backend
