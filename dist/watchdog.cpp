// Collective deadlines: the bookkeeping the NCCL watchdog thread polls, and the timed wait the
// MPI path uses in place of MPI_Wait.
#include "dist/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "dist/process_group.h"

namespace mlai::dist {

namespace {
double seconds(WatchClock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

void CollectiveDeadlines::add(std::string what, std::function<bool()> done,
                              WatchClock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.push_back({std::move(what), std::move(done), now});
}

std::string CollectiveDeadlines::overdue(WatchClock::time_point now) {
  // The completion tests (cudaEventQuery, and the event's destruction with its last owner) run
  // outside the lock: a wedged driver call must not also block the training thread's add().
  std::deque<Entry> mine;
  {
    std::lock_guard<std::mutex> lock(mu_);
    mine.swap(entries_);
  }
  std::erase_if(mine, [](const Entry& e) { return e.done(); });
  std::string late;
  // Entries are in start order, so the first one left is the oldest.
  if (!mine.empty() && timeout_s_ > 0) {
    const double waited = seconds(now - mine.front().start);
    if (waited > timeout_s_) late = timeout_message(mine.front().what, waited, timeout_s_);
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Older entries first, then whatever was added meanwhile.
  for (auto& e : entries_) mine.push_back(std::move(e));
  entries_.swap(mine);
  return late;
}

size_t CollectiveDeadlines::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

std::string timeout_message(const std::string& what, double waited_s, double timeout_s) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), " did not complete in %.0f s (--dist-timeout %g)", waited_s,
                timeout_s);
  return "collective timeout: " + what + buf +
         ": another rank is hung or died; aborting the job (raise --dist-timeout if a step "
         "legitimately takes longer)";
}

void wait_or_abort(const ProcessGroup& group, const std::string& what,
                   const std::function<bool()>& test) {
  const auto start = WatchClock::now();
  const double timeout = group.timeout_s();
  for (;;) {
    if (test()) return;
    group.abort_if_requested();  // the NCCL watchdog found the job broken
    const double waited = seconds(WatchClock::now() - start);
    if (timeout > 0 && waited > timeout) group.abort(timeout_message(what, waited, timeout));
    // MPI moves non-blocking collectives forward only inside MPI calls: poll back to back for
    // the first 5 ms (most waits end there), then with 50 us naps, so a long wait neither takes
    // a core from the rank's other threads nor adds more than that to the collective.
    if (waited > 5e-3) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void wait_request(const ProcessGroup& group, MPI_Request* req, const std::string& what) {
  wait_or_abort(group, what, [&] {
    if (*req == MPI_REQUEST_NULL) return true;
    int done = 0;
    if (const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
      char msg[MPI_MAX_ERROR_STRING];
      int len = 0;
      MPI_Error_string(rc, msg, &len);
      throw std::runtime_error("MPI_Test(" + what +
                               ") failed: " + std::string(msg, static_cast<size_t>(len)));
    }
    return done != 0;
  });
}

SubComm split_mpi(const ProcessGroup& group, MPI_Comm parent, int color, int key) {
  if (!group.mpi()) return {MPI_COMM_SELF, 0, 1};  // (a world of one: nothing to split)
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(parent, &req) != MPI_SUCCESS) throw std::runtime_error("MPI_Ibarrier failed");
  wait_request(group, &req, "barrier before splitting a communicator");
  SubComm sub;
  if (MPI_Comm_split(parent, color, key, &sub.comm) != MPI_SUCCESS ||
      MPI_Comm_rank(sub.comm, &sub.rank) != MPI_SUCCESS ||
      MPI_Comm_size(sub.comm, &sub.world) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Comm_split failed");
  return sub;
}

void free_split(MPI_Comm* comm) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (*comm != MPI_COMM_WORLD && *comm != MPI_COMM_SELF && *comm != MPI_COMM_NULL && !finalized)
    MPI_Comm_free(comm);
}

std::string broadcast_string(const ProcessGroup& group, const std::string& s) {
  if (!group.mpi() || group.world() == 1) return s;
  int64_t size = static_cast<int64_t>(s.size());
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Ibcast(&size, 1, MPI_INT64_T, 0, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Ibcast failed");
  wait_request(group, &req, "broadcast of a string's length from rank 0");
  std::string out = group.rank() == 0 ? s : std::string(static_cast<size_t>(size), '\0');
  if (size == 0) return out;
  if (MPI_Ibcast(out.data(), static_cast<int>(size), MPI_CHAR, 0, MPI_COMM_WORLD, &req) !=
      MPI_SUCCESS)
    throw std::runtime_error("MPI_Ibcast failed");
  wait_request(group, &req, "broadcast of a string from rank 0");
  return out;
}

}  // namespace mlai::dist
