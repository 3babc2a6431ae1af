// The MPI communicator for CPU tensors: non-blocking MPI collectives (Iallreduce, Ibcast,
// Iallgather, Ibarrier), MPI_Test on outstanding requests when asked to make progress, and a
// deadline on every wait (--dist-timeout) so a hung peer ends the job instead of hanging it.
#include <mpi.h>

#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/watchdog.h"
#include "kernels/common.h"
#include "kernels/half_convert.h"
#ifdef MLAI_WITH_CUDA
#include "dist/nccl_communicator.h"
#endif

namespace mlai::dist {

namespace {
// MPI has no 16-bit float types: fp16/bf16 travel as 2-byte opaque elements, summed by our own
// commutative reduction (in float, rounded once per addition: what NCCL does for half sums).
// fp16 goes through half_convert.h (F16C where the CPU has it: the reduction runs inside MPI's
// calls, on the communication's critical path).
template <class T>
void sum_16bit(void* in, void* inout, int* len, MPI_Datatype*) {
  if constexpr (std::is_same_v<T, kernels::Half>) {
    kernels::cpu::add_halves(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), *len);
  } else {
    const T* a = static_cast<const T*>(in);
    T* b = static_cast<T*>(inout);
    for (int i = 0; i < *len; ++i)
      b[i] = kernels::from_acc<T>(kernels::to_acc(a[i]) + kernels::to_acc(b[i]));
  }
}
struct SixteenBit {
  MPI_Datatype f16 = MPI_DATATYPE_NULL, bf16 = MPI_DATATYPE_NULL;
  MPI_Op sum_f16 = MPI_OP_NULL, sum_bf16 = MPI_OP_NULL;
};
const SixteenBit& sixteen_bit() {  // made on first use (after MPI_Init), kept until finalize
  static const SixteenBit t = [] {
    SixteenBit s;
    MPI_Type_contiguous(2, MPI_BYTE, &s.f16);
    MPI_Type_commit(&s.f16);
    MPI_Type_contiguous(2, MPI_BYTE, &s.bf16);
    MPI_Type_commit(&s.bf16);
    MPI_Op_create(&sum_16bit<kernels::Half>, 1, &s.sum_f16);
    MPI_Op_create(&sum_16bit<kernels::BFloat16>, 1, &s.sum_bf16);
    return s;
  }();
  return t;
}
MPI_Op mpi_sum(tensor::DType dt) {
  if (dt == tensor::DType::kFloat16) return sixteen_bit().sum_f16;
  if (dt == tensor::DType::kBFloat16) return sixteen_bit().sum_bf16;
  return MPI_SUM;
}

MPI_Datatype mpi_type(tensor::DType dt) {
  switch (dt) {
    case tensor::DType::kFloat16: return sixteen_bit().f16;
    case tensor::DType::kBFloat16: return sixteen_bit().bf16;
    case tensor::DType::kFloat32: return MPI_FLOAT;
    case tensor::DType::kFloat64: return MPI_DOUBLE;
    case tensor::DType::kInt64: return MPI_INT64_T;
    case tensor::DType::kInt32: return MPI_INT32_T;
    case tensor::DType::kUInt8: return MPI_UINT8_T;
    default:
      throw std::invalid_argument(std::string("MPI collectives: unsupported dtype ") +
                                  tensor::dtype_name(dt));
  }
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) + " failed: " + std::string(msg, static_cast<size_t>(len)));
}

// The request is shared with the communicator's pending list, which tests it for progress.
struct MpiWork : Work {
  MpiWork(const ProcessGroup& g, std::string w) : group(g), what(std::move(w)) {}
  const ProcessGroup& group;
  std::string what;
  std::shared_ptr<MPI_Request> req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
  void wait() override { wait_request(group, req.get(), what); }
  // MPI still owns the tensor's memory until the request completes, so even an unwinding rank
  // waits, though never past the deadline.
  ~MpiWork() override {
    try {
      wait_request(group, req.get(), what);
    } catch (const std::exception& e) {
      group.abort(e.what());
    }
  }
};

struct DoneWork : Work {
  void wait() override {}
};

// The tag of every send and receive (they pair up in order between two ranks).
constexpr int kPointToPointTag = 7;

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(const ProcessGroup& g) : Communicator(g) {}
  // A subgroup's (split()): this communicator frees `comm` when it goes.
  MpiCommunicator(const ProcessGroup& g, MPI_Comm comm, int rank, int world)
      : Communicator(g, rank, world), comm_(comm) {}
  ~MpiCommunicator() override { free_split(&comm_); }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;
  const char* name() const override { return "mpi"; }

  std::unique_ptr<Communicator> split(int color, int key) override {
    const SubComm sub = split_mpi(group_, comm_, color, key);
    return std::make_unique<MpiCommunicator>(group_, sub.comm, sub.rank, sub.world);
  }

  std::unique_ptr<Work> allreduce_sum_async(Tensor& t) override {
    require_cpu(t);
    if (world() == 1 || t.numel() == 0) return std::make_unique<DoneWork>();
    auto w = std::make_unique<MpiWork>(group_, describe_collective("allreduce", t));
    check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()),
                         mpi_type(t.dtype()), mpi_sum(t.dtype()), comm_, w->req.get()),
          "MPI_Iallreduce");
    pending_.push_back(w->req);
    return w;
  }

  std::unique_ptr<Work> reduce_scatter_async(const Tensor& send, Tensor& recv,
                                             const std::vector<int64_t>& counts) override {
    require_cpu(send);
    require_cpu(recv);
    check_segments(send, recv, counts);
    if (world() == 1) {
      recv.copy_from(send.reshape(recv.shape()));
      return std::make_unique<DoneWork>();
    }
    std::vector<int> c(counts.begin(), counts.end());
    auto w = std::make_unique<MpiWork>(group_, describe_collective("reduce_scatter", send));
    // (One collective of few rounds: Open MPI's Ireduce pipelines a large message in many
    // segments, each waiting for a test of the request, where this one takes a few.)
    check(MPI_Ireduce_scatter(send.data_ptr(), recv.data_ptr(), c.data(), mpi_type(send.dtype()),
                              mpi_sum(send.dtype()), comm_, w->req.get()),
          "MPI_Ireduce_scatter");
    pending_.push_back(w->req);
    return w;
  }

  std::unique_ptr<Work> broadcast_async(Tensor& t, int root) override {
    require_cpu(t);
    if (world() == 1 || t.numel() == 0) return std::make_unique<DoneWork>();
    auto w = std::make_unique<MpiWork>(group_, describe_collective("broadcast", t));
    check(MPI_Ibcast(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype()), root,
                     comm_, w->req.get()),
          "MPI_Ibcast");
    pending_.push_back(w->req);
    return w;
  }

  std::unique_ptr<Work> send_async(const Tensor& t, int dst) override {
    require_cpu(t);
    if (t.numel() == 0) return std::make_unique<DoneWork>();
    auto w = std::make_unique<MpiWork>(
        group_, describe_collective("send", t) + " to rank " + std::to_string(dst));
    check(MPI_Isend(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype()), dst,
                    kPointToPointTag, comm_, w->req.get()),
          "MPI_Isend");
    pending_.push_back(w->req);
    return w;
  }

  std::unique_ptr<Work> recv_async(Tensor& t, int src) override {
    require_cpu(t);
    if (t.numel() == 0) return std::make_unique<DoneWork>();
    auto w = std::make_unique<MpiWork>(
        group_, describe_collective("receive", t) + " from rank " + std::to_string(src));
    check(MPI_Irecv(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype()), src,
                    kPointToPointTag, comm_, w->req.get()),
          "MPI_Irecv");
    pending_.push_back(w->req);
    return w;
  }

  Tensor allgather(const Tensor& t) override {
    require_cpu(t);
    tensor::Shape shape = t.shape();
    shape.insert(shape.begin(), world());
    Tensor out = Tensor::empty(shape, t.dtype(), t.device());
    if (world() == 1) {
      out.reshape(t.shape()).copy_from(t);
      return out;
    }
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Iallgather(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype()),
                         out.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype()),
                         comm_, &req),
          "MPI_Iallgather");
    wait_request(group_, &req, describe_collective("allgather", t));
    return out;
  }

  void barrier() override {
    if (world() == 1) return;
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait_request(group_, &req, "barrier");
  }

  void progress() override {
    // One MPI_Test per outstanding request pushes Open MPI's progress engine forward.
    for (auto& r : pending_) {
      if (*r == MPI_REQUEST_NULL) continue;
      int done = 0;
      check(MPI_Test(r.get(), &done, MPI_STATUS_IGNORE), "MPI_Test");
    }
    std::erase_if(pending_, [](const auto& r) { return *r == MPI_REQUEST_NULL; });
  }

 private:
  static void require_cpu(const Tensor& t) {
    if (!t.device().is_cpu())
      throw std::invalid_argument("the mpi backend reduces CPU tensors; use --dist-backend nccl "
                                  "(or auto) for " + t.device().str());
    if (t.numel() > INT32_MAX) throw std::invalid_argument("MPI collective larger than 2^31 elements");
  }
  std::vector<std::shared_ptr<MPI_Request>> pending_;
  MPI_Comm comm_ = MPI_COMM_WORLD;
};
}  // namespace

std::unique_ptr<Communicator> make_communicator(const std::string& backend,
                                                const tensor::Device& device,
                                                const ProcessGroup& group) {
  const std::string b = backend == "auto" ? (device.is_cuda() ? "nccl" : "mpi") : backend;
  if (b == "mpi") {
    if (device.is_cuda())
      throw std::invalid_argument("--dist-backend mpi reduces CPU tensors only; use nccl or auto "
                                  "with --device " + device.str());
    return std::make_unique<MpiCommunicator>(group);
  }
  if (b == "nccl") {
    if (!device.is_cuda())
      throw std::invalid_argument("--dist-backend nccl needs a CUDA device (got --device " +
                                  device.str() + "); use mpi or auto on CPUs");
#ifdef MLAI_WITH_CUDA
    return make_nccl_communicator(group, device);
#else
    throw std::invalid_argument("--dist-backend nccl: mlai was built without CUDA");
#endif
  }
  throw std::invalid_argument("unknown --dist-backend '" + backend + "' (expected auto, nccl or mpi)");
}

namespace {
struct AllWork : Work {
  std::vector<std::unique_ptr<Work>> works;
  void wait() override {
    for (auto& w : works) w->wait();
  }
};
}  // namespace

std::unique_ptr<Work> Communicator::broadcast_many_async(const std::vector<Broadcast>& items) {
  auto all = std::make_unique<AllWork>();
  for (const Broadcast& b : items)
    if (b.t->numel() > 0) all->works.push_back(broadcast_async(*b.t, b.root));
  return all;
}

void Communicator::check_segments(const Tensor& send, const Tensor& recv,
                                  const std::vector<int64_t>& counts) const {
  int64_t total = 0;
  for (int64_t c : counts) {
    if (c < 0 || c > INT32_MAX)
      throw std::invalid_argument("reduce_scatter: segment of " + std::to_string(c) + " elements");
    total += c;
  }
  if (static_cast<int>(counts.size()) != world() || send.numel() != total ||
      recv.numel() != counts[static_cast<size_t>(rank())] || send.dtype() != recv.dtype() ||
      send.device() != recv.device())
    throw std::invalid_argument("reduce_scatter: " + std::to_string(counts.size()) +
                                " segments of " + std::to_string(total) + " elements in all for " +
                                std::to_string(world()) + " ranks, from " + send.str() + " into " +
                                recv.str());
}

double allreduce_host(const ProcessGroup& g, double value, bool max) {
  if (!g.mpi() || g.world() == 1) return value;
  double out = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  check(MPI_Iallreduce(&value, &out, 1, MPI_DOUBLE, max ? MPI_MAX : MPI_SUM, MPI_COMM_WORLD, &req),
        "MPI_Iallreduce");
  wait_request(g, &req, max ? "allreduce (max) of a host value" : "allreduce of a host value");
  return out;
}

std::vector<std::string> gather_host(const ProcessGroup& g, const std::string& text) {
  if (!g.mpi() || g.world() == 1) return {text};
  const int world = g.world();
  const bool root = g.rank() == 0;
  if (text.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw std::runtime_error("gather: a rank's text is over 2 GB");
  int len = static_cast<int>(text.size());
  std::vector<int> lens(root ? world : 0), offsets(root ? world : 0);
  MPI_Request req = MPI_REQUEST_NULL;
  check(MPI_Igather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD, &req),
        "MPI_Igather");
  wait_request(g, &req, "gather of text lengths");
  int64_t total = 0;
  for (int r = 0; r < (root ? world : 0); ++r) {
    offsets[r] = static_cast<int>(total);
    total += lens[r];
  }
  if (total > std::numeric_limits<int>::max())
    throw std::runtime_error("gather: the ranks' texts are over 2 GB together");
  std::string all(static_cast<size_t>(total), '\0');
  check(MPI_Igatherv(text.data(), len, MPI_CHAR, all.data(), lens.data(), offsets.data(),
                     MPI_CHAR, 0, MPI_COMM_WORLD, &req),
        "MPI_Igatherv");
  wait_request(g, &req, "gather of text");
  std::vector<std::string> out;
  for (int r = 0; r < (root ? world : 0); ++r) out.push_back(all.substr(offsets[r], lens[r]));
  return out;
}

}  // namespace mlai::dist
