// Collectives behind one interface: MPI for CPU tensors, NCCL for GPU tensors (rank 0 makes the
// NCCL id and broadcasts it over MPI). Async allreduces return a Work to wait on; on a GPU
// waiting makes the compute stream wait (no host block), on the CPU it completes the request.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dist/process_group.h"
#include "tensor/tensor.h"

namespace mlai::dist {

using tensor::Tensor;

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;
  // This communicator's ranks: the job's, or a subgroup's (split()).
  int rank() const { return rank_; }
  int world() const { return world_; }

  // Sums `t` over all ranks, in place. Every rank must issue the same collectives in the same
  // order.
  virtual std::unique_ptr<Work> allreduce_sum_async(Tensor& t) = 0;
  void allreduce_sum(Tensor& t) { allreduce_sum_async(t)->wait(); }
  // `send` is one segment per rank, in rank order, counts[r] elements for rank r; each rank's
  // `recv` (counts[rank] elements) gets the sum over ranks of its segment (MPI's
  // Reduce_scatter; ZeRO stage 2's buckets, each part summed only where it is stepped).
  // `send` must stay alive and unchanged until the work is waited for.
  virtual std::unique_ptr<Work> reduce_scatter_async(const Tensor& send, Tensor& recv,
                                                     const std::vector<int64_t>& counts) = 0;
  // Rank `root`'s `t` into every rank's `t` (same shape everywhere). `t` must stay alive, and
  // unchanged on the root, until the work is waited for; several may be in flight at once (ZeRO
  // stage 3 gathers a unit from every owner together, and the next unit while this one
  // computes).
  virtual std::unique_ptr<Work> broadcast_async(Tensor& t, int root) = 0;
  void broadcast(Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  // Several broadcasts as one operation (every rank passes the same list in the same order),
  // waited for together: ZeRO's gathers, one tensor from each owner. NCCL runs them as one
  // grouped launch (ncclGroupStart/End), so the owners send at once rather than one broadcast
  // after another on the stream, which would add up world latencies per gather; MPI posts
  // them all before any is waited for. Tensors with no elements are passed by.
  struct Broadcast {
    Tensor* t;
    int root;
  };
  virtual std::unique_ptr<Work> broadcast_many_async(const std::vector<Broadcast>& items);
  // Point to point (ZeRO's gathers to rank 0 for a checkpoint's write): `t` from this rank to
  // rank `dst`, or from rank `src` into `t`. Sends and receives between two ranks pair up in
  // the order they are made; the tensors must stay alive until the work is waited for.
  virtual std::unique_ptr<Work> send_async(const Tensor& t, int dst) = 0;
  virtual std::unique_ptr<Work> recv_async(Tensor& t, int src) = 0;
  // Every rank's `t` (same shape everywhere), stacked along a new first dimension [world, ...].
  virtual Tensor allgather(const Tensor& t) = 0;
  virtual void barrier() = 0;
  // Lets outstanding non-blocking operations advance (MPI progresses them only inside calls).
  virtual void progress() {}
  // Collective over this communicator (MPI_Comm_split): a communicator of the ranks that pass
  // the same `color`, ranked by `key`. Hybrid sharding's groups (--shard-size): the ranks of a
  // node, which shard the model, and the ranks holding the same shard on every node, which sum
  // its gradients. Operations on a subgroup keep the job's deadline and abort the whole job.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

 protected:
  explicit Communicator(const ProcessGroup& g) : Communicator(g, g.rank(), g.world()) {}
  Communicator(const ProcessGroup& g, int rank, int world)
      : group_(g), rank_(rank), world_(world) {}
  // reduce_scatter_async's arguments agree (an invalid_argument naming them otherwise).
  void check_segments(const Tensor& send, const Tensor& recv,
                      const std::vector<int64_t>& counts) const;
  const ProcessGroup& group_;  // the whole job's (deadlines, abort)

 private:
  int rank_, world_;
};

// backend: "auto" (nccl for a CUDA device, mpi for the CPU), "mpi" or "nccl".
std::unique_ptr<Communicator> make_communicator(const std::string& backend,
                                                const tensor::Device& device,
                                                const ProcessGroup& group);

// "allreduce of 1024 float32": a collective as deadline messages name it.
inline std::string describe_collective(const char* op, const Tensor& t) {
  return std::string(op) + " of " + std::to_string(t.numel()) + " " + tensor::dtype_name(t.dtype());
}

// A value summed over ranks (host scalars for logging and stop requests).
double allreduce_host(const ProcessGroup& g, double value, bool max = false);
// Every rank's string, on rank 0 in rank order (other ranks get an empty list); one process
// without MPI gets its own. Collective: every rank calls it.
std::vector<std::string> gather_host(const ProcessGroup& g, const std::string& text);

}  // namespace mlai::dist
