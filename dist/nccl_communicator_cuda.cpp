// NCCL for GPU tensors. Rank 0 makes the unique id and broadcasts it over MPI. Collectives run
// on a dedicated communication stream: it first waits (an event) for the compute stream's work
// so far, and a Work's wait() makes the compute stream wait for the collective, so nothing
// blocks the host and communication overlaps the rest of backward. A watchdog thread polls
// ncclCommGetAsyncError and aborts the whole job on an error (a dead peer), so no rank hangs.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <thread>

#include "dist/nccl_communicator.h"
#include "kernels/cuda_check.h"
#include "tensor/stream.h"

namespace mlai::dist {

namespace {
ncclDataType_t nccl_type(tensor::DType dt) {
  switch (dt) {
    case tensor::DType::kFloat32:
      return ncclFloat32;
    case tensor::DType::kFloat16:
      return ncclFloat16;
    case tensor::DType::kFloat64:
      return ncclFloat64;
    case tensor::DType::kInt64:
      return ncclInt64;
    case tensor::DType::kInt32:
      return ncclInt32;
    case tensor::DType::kUInt8:
      return ncclUint8;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case tensor::DType::kBFloat16:
      return ncclBfloat16;
#endif
    default:
      throw std::invalid_argument(std::string("NCCL: unsupported dtype ") + tensor::dtype_name(dt));
  }
}

struct NcclWork : Work {
  cudaEvent_t done = nullptr;
  cudaStream_t compute = nullptr;
  void wait() override {
    if (done) MLAI_CUDA_CHECK(cudaStreamWaitEvent(compute, done, 0));
  }
  ~NcclWork() override {
    if (done) cudaEventDestroy(done);
  }
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const ProcessGroup& g, const tensor::Device& d) : Communicator(g), device_(d) {
    ncclUniqueId id;
    if (g.rank() == 0) MLAI_NCCL_CHECK(ncclGetUniqueId(&id));
    if (g.mpi() && MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
      throw std::runtime_error("MPI_Bcast of the NCCL unique id failed");
    MLAI_CUDA_CHECK(cudaSetDevice(d.index));
    MLAI_NCCL_CHECK(ncclCommInitRank(&comm_, g.world(), id, g.rank()));
    comm_stream_ = tensor::Stream::create(d);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    // Unwinding from an error, this rank may have queued a collective its peers never join:
    // ncclCommDestroy would wait for it forever (and MPI_Abort in the caller never come), so
    // the communicator is aborted instead, as PyTorch does.
    if (comm_) {
      if (std::uncaught_exceptions() > 0) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
  }

  const char* name() const override { return "nccl"; }

  std::unique_ptr<Work> allreduce_sum_async(Tensor& t) override {
    auto w = std::make_unique<NcclWork>();
    w->compute = tensor::current_stream(device_).handle();
    cudaStream_t comm = comm_stream_.handle();
    cudaEvent_t ready;
    MLAI_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    MLAI_CUDA_CHECK(cudaEventRecord(ready, w->compute));
    MLAI_CUDA_CHECK(cudaStreamWaitEvent(comm, ready, 0));
    cudaEventDestroy(ready);  // released once recorded work completes
    MLAI_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype()), ncclSum, comm_, comm));
    MLAI_CUDA_CHECK(cudaEventCreateWithFlags(&w->done, cudaEventDisableTiming));
    MLAI_CUDA_CHECK(cudaEventRecord(w->done, comm));
    return w;
  }

  void broadcast(Tensor& t, int root) override {
    cudaStream_t s = tensor::current_stream(device_).handle();
    MLAI_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype()), root, comm_, s));
  }

  Tensor allgather(const Tensor& t) override {
    tensor::Shape shape = t.shape();
    shape.insert(shape.begin(), world());
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    cudaStream_t s = tensor::current_stream(device_).handle();
    MLAI_NCCL_CHECK(ncclAllGather(t.data_ptr(), out.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype()), comm_, s));
    return out;
  }

  void barrier() override {
    if (group_.mpi()) MPI_Barrier(MPI_COMM_WORLD);
  }

 private:
  void watch() {
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        group_.abort(std::string("NCCL asynchronous error: ") + ncclGetErrorString(async) +
                     " (a peer died or the network failed); aborting the job");
      }
    }
  }

  tensor::Device device_;
  ncclComm_t comm_ = nullptr;
  tensor::Stream comm_stream_;
  std::thread watchdog_;
  std::atomic<bool> stop_{false};
};
}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group,
                                                     const tensor::Device& device) {
  return std::make_unique<NcclCommunicator>(group, device);
}

}  // namespace mlai::dist
