// Internal to tensor/: thin wrappers over the CUDA runtime, implemented in tensor/*_cuda.cpp
// (compiled only with MLAI_WITH_CUDA) so the generic code in tensor/*.cpp stays free of CUDA
// headers. Every call checks its status and throws a one-line error naming the call.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "tensor/allocator.h"

namespace mlai::tensor::cuda_backend {

// cudaGetDeviceCount; on error returns 0 and puts the runtime's message into *reason.
int device_count(std::string* reason);
void set_device(int device);
int current_device();
std::string device_name(int device);  // cudaGetDeviceProperties().name

StreamHandle stream_create(int device);  // cudaStreamCreateWithFlags(cudaStreamNonBlocking)
void stream_destroy(StreamHandle s);
void stream_synchronize(StreamHandle s);

void* event_create(int device, bool timing);
void event_destroy(void* e);
void event_record(void* e, StreamHandle s);
void event_wait(void* e, StreamHandle s);
void event_synchronize(void* e);
bool event_query(void* e);
float event_elapsed_ms(void* start, void* end);

// Stream capture into a CUDA graph (cuda_graph_cuda.cpp). capture_begin uses the relaxed mode:
// the caching allocator may still cudaMalloc new blocks for the graph's pool meanwhile.
bool stream_capturing(StreamHandle s);  // cudaStreamIsCapturing: an active capture
// Ends whatever capture the stream is in (active or invalidated by an illegal call), discarding
// the graph; never throws (for error paths).
void capture_begin(StreamHandle s);
void* capture_end(StreamHandle s);  // cudaStreamEndCapture + cudaGraphInstantiate: the exec
void capture_abort(StreamHandle s) noexcept;
void graph_launch(void* exec, StreamHandle s);
void graph_destroy(void* exec);
void stream_synchronize_noexcept(StreamHandle s) noexcept;  // for destructors

// cudaMemcpyAsync with the kind derived from the two sides; when !async the stream is
// synchronized before returning.
void memcpy(void* dst, bool dst_cuda, const void* src, bool src_cuda, size_t bytes,
            StreamHandle stream, bool async);

std::unique_ptr<RawMemory> device_memory(int device);  // cudaMalloc / cudaFree on `device`
std::unique_ptr<RawMemory> pinned_memory();            // cudaHostAlloc / cudaFreeHost

}  // namespace mlai::tensor::cuda_backend
