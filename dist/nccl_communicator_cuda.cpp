// NCCL for GPU tensors. Rank 0 makes the unique id and broadcasts it over MPI. Collectives run
// on a dedicated communication stream: it first waits (an event) for the compute stream's work
// so far, and a Work's wait() makes the compute stream wait for the collective, so nothing
// blocks the host and communication overlaps the rest of backward. A watchdog thread polls
// ncclCommGetAsyncError and every collective's completion event: on an error (a dead peer) or a
// collective past --dist-timeout (a hung peer) it aborts the communicator and ends the job, so
// no rank hangs.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "dist/nccl_communicator.h"
#include "dist/watchdog.h"
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

// A completion event shared by a Work and the watchdog's deadline list.
struct Event {
  cudaEvent_t e = nullptr;
  Event() { MLAI_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

struct NcclWork : Work {
  std::shared_ptr<Event> done;
  cudaStream_t compute = nullptr;
  void wait() override {
    if (done) MLAI_CUDA_CHECK(cudaStreamWaitEvent(compute, done->e, 0));
  }
};

std::string describe(const char* op, const Tensor& t) {
  return "NCCL " + describe_collective(op, t);
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const ProcessGroup& g, const tensor::Device& d)
      : NcclCommunicator(g, d, SubComm{MPI_COMM_WORLD, g.rank(), g.world()}, {}) {}
  // A subgroup's (split()): its ranks in `sub`, its own MPI communicator (freed with this one)
  // for the unique id and barriers, and the parent's communication stream, so the collectives of
  // both run one after another in the order they were issued, the same on every rank (two NCCL
  // communicators whose kernels run at once can deadlock each other on a GPU).
  NcclCommunicator(const ProcessGroup& g, const tensor::Device& d, SubComm sub,
                   tensor::Stream stream)
      : Communicator(g, sub.rank, sub.world),
        device_(d),
        deadlines_(g.timeout_s()),
        mpi_comm_(sub.comm) {
    ncclUniqueId id;
    if (sub.rank == 0) MLAI_NCCL_CHECK(ncclGetUniqueId(&id));
    if (g.mpi()) {
      MPI_Request req = MPI_REQUEST_NULL;
      if (MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm_, &req) != MPI_SUCCESS)
        throw std::runtime_error("MPI_Ibcast of the NCCL unique id failed");
      wait_request(g, &req, "broadcast of the NCCL unique id");
    }
    MLAI_CUDA_CHECK(cudaSetDevice(d.index));
    MLAI_NCCL_CHECK(ncclCommInitRank(&comm_, sub.world, id, sub.rank));
    comm_stream_ = stream.handle() ? stream : tensor::Stream::create(d);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    stop_ = true;
    if (watchdog_.joinable()) watchdog_.join();
    if (aborted_) return;  // the watchdog aborted the communicator already
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
    free_split(&mpi_comm_);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  std::unique_ptr<Communicator> split(int color, int key) override {
    const SubComm sub = split_mpi(group_, mpi_comm_, color, key);
    return std::make_unique<NcclCommunicator>(group_, device_, sub, comm_stream_);
  }

  const char* name() const override { return "nccl"; }

  // Held while a collective is enqueued; the watchdog takes it (briefly waiting) to abort, so
  // the training thread never enqueues on a communicator the watchdog has freed.
  std::unique_lock<std::timed_mutex> enqueue_lock() {
    std::unique_lock<std::timed_mutex> lock(mu_);
    if (aborted_) throw std::runtime_error("the NCCL communicator was aborted: " + abort_reason_);
    return lock;
  }

  std::unique_ptr<Work> allreduce_sum_async(Tensor& t) override {
    return on_comm_stream(describe("allreduce", t), [&](cudaStream_t comm) {
      MLAI_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                    nccl_type(t.dtype()), ncclSum, comm_, comm));
    });
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& send, Tensor& recv,
                                             const std::vector<int64_t>& counts) override {
    check_segments(send, recv, counts);
    // NCCL's ReduceScatter takes equal segments: one Reduce per rank with a segment, to that
    // rank, grouped into one launch.
    return on_comm_stream(describe("reduce_scatter", send), [&](cudaStream_t comm) {
      const size_t elem = tensor::dtype_size(send.dtype());
      const auto* base = static_cast<const char*>(send.data_ptr());
      MLAI_NCCL_CHECK(ncclGroupStart());
      size_t at = 0;
      for (int r = 0; r < world(); ++r) {
        const auto n = static_cast<size_t>(counts[static_cast<size_t>(r)]);
        // (recvbuff is read only on the root; elsewhere the segment itself stands in for it)
        void* out = r == rank() ? recv.data_ptr() : const_cast<char*>(base + at * elem);
        if (n > 0)
          MLAI_NCCL_CHECK(ncclReduce(base + at * elem, out, n, nccl_type(send.dtype()), ncclSum, r,
                                     comm_, comm));
        at += n;
      }
      MLAI_NCCL_CHECK(ncclGroupEnd());
    });
  }

  // An asynchronous collective: `enqueue` puts it on the communication stream once that stream
  // has waited for the compute stream's work so far.
  template <class Enqueue>
  std::unique_ptr<Work> on_comm_stream(const std::string& what, Enqueue enqueue) {
    auto lock = enqueue_lock();
    auto w = std::make_unique<NcclWork>();
    w->compute = tensor::current_stream(device_).handle();
    cudaStream_t comm = comm_stream_.handle();
    cudaEvent_t ready;
    MLAI_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    MLAI_CUDA_CHECK(cudaEventRecord(ready, w->compute));
    MLAI_CUDA_CHECK(cudaStreamWaitEvent(comm, ready, 0));
    cudaEventDestroy(ready);  // released once recorded work completes
    enqueue(comm);
    w->done = watch_until_done(what, comm);
    return w;
  }

  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    return on_comm_stream(describe("broadcast", t), [&](cudaStream_t comm) {
      MLAI_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                    nccl_type(t.dtype()), root, comm_, comm));
    });
  }

  std::unique_ptr<Work> broadcast_many_async(const std::vector<Broadcast>& items) override {
    int64_t elements = 0;
    for (const Broadcast& b : items) elements += b.t->numel();
    if (elements == 0) return std::make_unique<NcclWork>();  // (nothing to wait for)
    const std::string what = "NCCL " + std::to_string(items.size()) + " grouped broadcasts of " +
                             std::to_string(elements) + " elements";
    return on_comm_stream(what, [&](cudaStream_t comm) {
      MLAI_NCCL_CHECK(ncclGroupStart());
      for (const Broadcast& b : items)
        if (b.t->numel() > 0)
          MLAI_NCCL_CHECK(ncclBroadcast(b.t->data_ptr(), b.t->data_ptr(),
                                        static_cast<size_t>(b.t->numel()),
                                        nccl_type(b.t->dtype()), b.root, comm_, comm));
      MLAI_NCCL_CHECK(ncclGroupEnd());
    });
  }

  std::unique_ptr<Work> send_async(const Tensor& t, int dst) override {
    return on_comm_stream(describe("send", t) + " to rank " + std::to_string(dst),
                          [&](cudaStream_t comm) {
                            MLAI_NCCL_CHECK(ncclSend(t.data_ptr(), static_cast<size_t>(t.numel()),
                                                     nccl_type(t.dtype()), dst, comm_, comm));
                          });
  }

  std::unique_ptr<Work> recv_async(Tensor& t, int src) override {
    return on_comm_stream(describe("receive", t) + " from rank " + std::to_string(src),
                          [&](cudaStream_t comm) {
                            MLAI_NCCL_CHECK(ncclRecv(t.data_ptr(), static_cast<size_t>(t.numel()),
                                                     nccl_type(t.dtype()), src, comm_, comm));
                          });
  }

  Tensor allgather(const Tensor& t) override {
    tensor::Shape shape = t.shape();
    shape.insert(shape.begin(), world());
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    auto lock = enqueue_lock();
    cudaStream_t s = tensor::current_stream(device_).handle();
    MLAI_NCCL_CHECK(ncclAllGather(t.data_ptr(), out.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype()), comm_, s));
    watch_until_done(describe("allgather", t), s);
    return out;
  }

  void barrier() override {
    if (!group_.mpi()) return;
    MPI_Request req = MPI_REQUEST_NULL;
    if (MPI_Ibarrier(mpi_comm_, &req) != MPI_SUCCESS)
      throw std::runtime_error("MPI_Ibarrier failed");
    wait_request(group_, &req, "barrier");
  }

 private:
  // Records an event after the collective on `stream` and gives it a deadline.
  std::shared_ptr<Event> watch_until_done(std::string what, cudaStream_t stream) {
    auto ev = std::make_shared<Event>();
    MLAI_CUDA_CHECK(cudaEventRecord(ev->e, stream));
    deadlines_.add(std::move(what), [ev] { return cudaEventQuery(ev->e) != cudaErrorNotReady; });
    return ev;
  }

  // The watchdog's thread: on an NCCL error (a dead peer) or a collective past its deadline (a
  // hung peer) it aborts the communicator, which lets NCCL's kernels on this GPU return and the
  // training thread go on to where it checks ProcessGroup::abort_if_requested() and ends the job
  // with MPI_Abort (MPI is FUNNELED: only that thread may call it; under srun it also stops the
  // other ranks). If the training thread has not done so within kGrace, this rank exits alone.
  void watch() {
    // A new thread's CUDA calls (cudaEventQuery, an event's destruction) would otherwise go to
    // device 0 and make a context there for every rank of the node.
    cudaSetDevice(device_.index);
    std::string problem;
    while (!stop_ && problem.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      if (stop_) return;
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess) {
        problem = std::string("NCCL asynchronous error: ") + ncclGetErrorString(async) +
                  " (a peer died or the network failed); aborting the job";
      } else {
        problem = deadlines_.overdue();
      }
    }
    if (problem.empty()) return;
    {
      // An enqueue that blocks (a full launch queue behind a hung kernel) holds the lock; the
      // abort goes ahead without it after a while, and unblocks that enqueue.
      std::unique_lock<std::timed_mutex> lock(mu_, std::chrono::seconds(2));
      abort_reason_ = problem;
      aborted_ = true;
      ncclCommAbort(comm_);
    }
    group_.request_abort(problem);
    constexpr auto kGrace = std::chrono::seconds(30);
    const auto start = std::chrono::steady_clock::now();
    while (!stop_ && std::chrono::steady_clock::now() - start < kGrace)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!stop_) group_.abort_from_thread(problem + " (the training thread did not end the job)");
  }

  tensor::Device device_;
  CollectiveDeadlines deadlines_;
  MPI_Comm mpi_comm_ = MPI_COMM_WORLD;  // (a split's own, freed with it)
  ncclComm_t comm_ = nullptr;
  tensor::Stream comm_stream_;  // (shared with the communicators split from this one)
  std::thread watchdog_;
  std::atomic<bool> stop_{false};
  std::timed_mutex mu_;
  std::atomic<bool> aborted_{false};
  std::string abort_reason_;  // written before aborted_ is set, under mu_
};
}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const ProcessGroup& group,
                                                     const tensor::Device& device) {
  return std::make_unique<NcclCommunicator>(group, device);
}

}  // namespace mlai::dist
