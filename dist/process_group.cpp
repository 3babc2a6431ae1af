// MPI start-up and the job-wide abort.
#include "dist/process_group.h"

#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace mlai::dist {

namespace {
ProcessGroup* g_group = nullptr;

const char* env(const char* n) {
  const char* v = std::getenv(n);
  return v && *v ? v : nullptr;
}

void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw std::runtime_error(std::string(what) +
                           " failed: " + std::string(msg, static_cast<size_t>(len)));
}
}  // namespace

bool launched_by_mpi() {
  // mpirun (Open MPI), any PMIx launcher (srun --mpi=pmix, prterun), or Slurm with several tasks.
  if (env("OMPI_COMM_WORLD_SIZE") || env("PMIX_RANK") || env("PMI_RANK")) return true;
  const char* ntasks = env("SLURM_NTASKS");
  return ntasks && std::atoi(ntasks) > 1 && env("SLURM_PROCID");
}

ProcessGroup& ProcessGroup::init(int* argc, char*** argv) {
  if (g_group) return *g_group;
  g_group = new ProcessGroup();  // lives until exit: MPI state is process-wide
  if (!launched_by_mpi()) return *g_group;
  int provided = 0;
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  // Errors come back as codes we turn into exceptions (which then abort the job cleanly).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  ProcessGroup& g = *g_group;
  g.mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &g.world_);
  MPI_Comm local;
  mpi_check(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.rank_, MPI_INFO_NULL, &local),
      "MPI_Comm_split_type");
  MPI_Comm_rank(local, &g.local_rank_);
  MPI_Comm_size(local, &g.local_world_);
  MPI_Comm_free(&local);
  // Nodes: count the local leaders.
  int leader = g.local_rank_ == 0 ? 1 : 0;
  mpi_check(MPI_Allreduce(&leader, &g.nodes_, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD),
            "MPI_Allreduce");
  return g;
}

ProcessGroup& ProcessGroup::get() {
  if (!g_group) g_group = new ProcessGroup();
  return *g_group;
}

ProcessGroup& ProcessGroup::single() {
  static ProcessGroup* one = new ProcessGroup();
  return *one;
}

std::string ProcessGroup::describe() const {
  return "rank " + std::to_string(rank_) + " of " + std::to_string(world_) + " (local " +
         std::to_string(local_rank_) + " of " + std::to_string(local_world_) + ", " +
         std::to_string(nodes_) + " node(s))";
}

void ProcessGroup::abort(const std::string& message, int code) const {
  report(message);
  if (mpi_ && !finalized_) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void ProcessGroup::abort_from_thread(const std::string& message, int code) const {
  report(message);
  std::_Exit(code);  // no destructors: the training thread may be inside CUDA or MPI right now
}

void ProcessGroup::request_abort(const std::string& message) const {
  std::lock_guard<std::mutex> lock(abort_mu_);
  if (abort_requested_.load()) return;  // the first reason is the one reported
  abort_message_ = message;
  abort_requested_.store(true, std::memory_order_release);
}

void ProcessGroup::abort_if_requested() const {
  if (!abort_requested_.load(std::memory_order_acquire)) return;
  std::string message;
  {
    std::lock_guard<std::mutex> lock(abort_mu_);
    message = abort_message_;
  }
  abort(message);
}

void ProcessGroup::report(const std::string& message) const {
  if (world_ > 1) {
    std::fprintf(stderr, "[rank %d] %s\n", rank_, message.c_str());
  } else {
    std::fprintf(stderr, "%s\n", message.c_str());
  }
  std::fflush(stderr);
  std::fflush(stdout);
}

void ProcessGroup::finalize() {
  if (mpi_ && !finalized_) {
    MPI_Finalize();
    finalized_ = true;
  }
}

}  // namespace mlai::dist
