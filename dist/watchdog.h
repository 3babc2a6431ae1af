// Deadlines for collectives. A peer that dies is noticed by the MPI runtime or by NCCL; a peer
// that hangs (a stuck file system, a deadlock, a GPU that stopped) is noticed by nobody, and
// every other rank would wait in its next collective until the job's time limit. So each
// collective gets a deadline (--dist-timeout, 600 s by default, PyTorch's NCCL default), and
// the rank that passes one ends the job with a message naming the collective.
#pragma once

#include <mpi.h>

#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

namespace mlai::dist {

class ProcessGroup;

using WatchClock = std::chrono::steady_clock;

// Collectives in flight, each with a test for completion and a deadline. add() runs on the
// training thread; overdue() on the NCCL watchdog's thread (tests call it with a made-up clock).
class CollectiveDeadlines {
 public:
  explicit CollectiveDeadlines(double timeout_s) : timeout_s_(timeout_s) {}

  // `done` must be safe to call from another thread (cudaEventQuery is).
  void add(std::string what, std::function<bool()> done,
           WatchClock::time_point now = WatchClock::now());
  // Drops the finished collectives; returns "" or a one-line description of the oldest one
  // still running past its deadline.
  std::string overdue(WatchClock::time_point now = WatchClock::now());
  size_t in_flight() const;
  double timeout_s() const { return timeout_s_; }

 private:
  struct Entry {
    std::string what;
    std::function<bool()> done;
    WatchClock::time_point start;
  };
  double timeout_s_;
  mutable std::mutex mu_;
  std::deque<Entry> entries_;
};

// The message both paths print: what did not finish, after how long, and what to do.
std::string timeout_message(const std::string& what, double waited_s, double timeout_s);

// Polls `test` (an MPI_Test) until it says done; past the group's timeout it ends the job with
// timeout_message. Spins briefly, then sleeps up to 1 ms between polls so a long wait does not
// take a core from the rank's other threads.
void wait_or_abort(const ProcessGroup& group, const std::string& what,
                   const std::function<bool()>& test);
// wait_or_abort on one MPI request (MPI_Test; an MPI error becomes an exception).
void wait_request(const ProcessGroup& group, MPI_Request* req, const std::string& what);

// MPI_Comm_split of `parent` (Communicator::split): the ranks passing `color` together, ranked
// by `key`. The split itself blocks, so an Ibarrier under the deadline goes first: a rank that
// never arrives ends the job instead of hanging it here. A process without MPI (a world of
// one) gets MPI_COMM_SELF, which is never freed.
struct SubComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, world = 1;
};
SubComm split_mpi(const ProcessGroup& group, MPI_Comm parent, int color, int key);
// Frees what split_mpi made (never MPI_COMM_WORLD or MPI_COMM_SELF, nor after MPI_Finalize).
void free_split(MPI_Comm* comm);

// Rank 0's `s` on every rank of the job (host memory, under the deadline): what rank 0 alone
// decided, such as the run's directory. A world of one returns `s`.
std::string broadcast_string(const ProcessGroup& group, const std::string& s);

}  // namespace mlai::dist
