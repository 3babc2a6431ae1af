// CUDA graph capture and replay for tensor/cuda_graph.h (through cuda_backend.h).
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
#include "tensor/cuda_backend.h"

namespace mlai::tensor::cuda_backend {

bool stream_capturing(StreamHandle s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MLAI_CUDA_CHECK(cudaStreamIsCapturing(s, &status));
  return status == cudaStreamCaptureStatusActive;
}

void capture_begin(StreamHandle s) {
  MLAI_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
}

void* capture_end(StreamHandle s) {
  cudaGraph_t graph = nullptr;
  MLAI_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);  // the executable keeps what it needs
  MLAI_CUDA_CHECK(st);
  return exec;
}

void capture_abort(StreamHandle s) noexcept {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    // Active, or invalidated by an illegal call: either way the capture must be ended before
    // the stream takes work again. (EndCapture reports the error that invalidated it.)
    cudaGraph_t graph = nullptr;
    (void)cudaStreamEndCapture(s, &graph);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
  }
  (void)cudaGetLastError();  // clear the (non-sticky) error the failed capture left
}

void stream_synchronize_noexcept(StreamHandle s) noexcept { (void)cudaStreamSynchronize(s); }

void graph_launch(void* exec, StreamHandle s) {
  MLAI_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), s));
}

void graph_destroy(void* exec) {
  if (exec != nullptr) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

}  // namespace mlai::tensor::cuda_backend
