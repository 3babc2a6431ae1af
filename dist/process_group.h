// The ranks of a data-parallel job. Under a launcher (mpirun, or srun with PMIx) MPI is
// initialised and gives rank, world size, local rank (ranks sharing a node, from
// MPI_Comm_split_type) and the node count; a plain start needs no MPI at all and is world 1.
// Slurm's variables are read only for names and logs.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace mlai::dist {

class ProcessGroup {
 public:
  // Initialises MPI when a launcher started this process; safe to call more than once.
  static ProcessGroup& init(int* argc, char*** argv);
  // The group made by init(), or a world of one when init() was never called.
  static ProcessGroup& get();
  // A world of one (for a single-process run inside an MPI job, e.g. a reference in tests).
  static ProcessGroup& single();

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }
  int local_world() const { return local_world_; }
  int nodes() const { return nodes_; }
  bool mpi() const { return mpi_; }
  bool is_main() const { return rank_ == 0; }
  std::string describe() const;  // "rank 1 of 4 (local 1 of 2, 2 nodes)"

  // Prints "[rank r] message" to stderr and ends the whole job (MPI_Abort under MPI), so a
  // fatal error on one rank never leaves the others waiting in a collective.
  [[noreturn]] void abort(const std::string& message, int code = 1) const;
  // The same from a thread other than the one that initialised MPI (the NCCL watchdog). MPI was
  // initialised FUNNELED, so MPI_Abort is not allowed there: this rank exits at once and the
  // launcher ends the others (mpirun does on any non-zero exit; under srun the peers' NCCL sees
  // the lost connection, or their own deadlines pass).
  [[noreturn]] void abort_from_thread(const std::string& message, int code = 1) const;

  // A thread that found the job broken (the NCCL watchdog) asks the training thread to end it
  // with MPI_Abort, which also stops the other ranks under srun; abort_if_requested(), called
  // where the training thread waits or steps, does that.
  void request_abort(const std::string& message) const;
  void abort_if_requested() const;

  // Seconds a collective may take before the job is aborted (--dist-timeout; <= 0: never).
  double timeout_s() const { return timeout_s_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  void finalize();  // MPI_Finalize (at normal exit)

 private:
  ProcessGroup() = default;
  void report(const std::string& message) const;
  int rank_ = 0, world_ = 1, local_rank_ = 0, local_world_ = 1, nodes_ = 1;
  bool mpi_ = false;
  bool finalized_ = false;
  double timeout_s_ = 600.0;
  mutable std::atomic<bool> abort_requested_{false};
  mutable std::mutex abort_mu_;
  mutable std::string abort_message_;
};

// True when a launcher set this process up as one rank of several (Open MPI, PMIx, Slurm).
bool launched_by_mpi();

}  // namespace mlai::dist
