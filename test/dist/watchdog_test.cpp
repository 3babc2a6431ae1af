// Collective deadlines: the bookkeeping behind the NCCL watchdog (run here with a made-up clock,
// so no test waits), the timed MPI wait, and on a GPU a one-rank NCCL communicator. The
// end-to-end case, a hung rank under mpirun that the other rank's deadline ends, is
// test/dist/rank_failure_test.sh.
#include "dist/watchdog.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "dist/communicator.h"
#include "tensor/device.h"

namespace mlai::dist {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(CollectiveDeadlines, NamesTheOldestUnfinishedCollectiveOncePastTheTimeout) {
  CollectiveDeadlines d(10.0);
  const auto t0 = WatchClock::time_point{} + seconds(1000);
  bool first_done = false, second_done = false;
  d.add(
      "NCCL allreduce of 100 float32", [&] { return first_done; }, t0);
  d.add(
      "NCCL broadcast of 7 float16", [&] { return second_done; }, t0 + seconds(4));
  EXPECT_EQ(d.overdue(t0 + seconds(10)), "");  // at the deadline, not past it
  EXPECT_EQ(d.in_flight(), 2u);

  const std::string late = d.overdue(t0 + seconds(11));
  EXPECT_NE(late.find("NCCL allreduce of 100 float32 did not complete in 11 s"), std::string::npos)
      << late;
  EXPECT_NE(late.find("--dist-timeout 10"), std::string::npos) << late;

  // Once the first finishes, only the second counts, from its own start.
  first_done = true;
  EXPECT_EQ(d.overdue(t0 + seconds(14)), "");
  EXPECT_EQ(d.in_flight(), 1u);
  const std::string second = d.overdue(t0 + seconds(15));
  EXPECT_NE(second.find("NCCL broadcast of 7 float16 did not complete in 11 s"), std::string::npos)
      << second;
  second_done = true;
  EXPECT_EQ(d.overdue(t0 + seconds(1000)), "");
  EXPECT_EQ(d.in_flight(), 0u);
}

TEST(CollectiveDeadlines, FinishedCollectivesAreDroppedEvenWhenLate) {
  // A collective that took longer than the timeout but has finished is no reason to abort.
  CollectiveDeadlines d(1.0);
  const auto t0 = WatchClock::time_point{} + seconds(5);
  d.add(
      "slow but done", [] { return true; }, t0);
  EXPECT_EQ(d.overdue(t0 + seconds(60)), "");
  EXPECT_EQ(d.in_flight(), 0u);
}

TEST(CollectiveDeadlines, ZeroTimeoutMeansNoDeadline) {
  CollectiveDeadlines d(0.0);
  const auto t0 = WatchClock::time_point{} + seconds(5);
  d.add(
      "never finishes", [] { return false; }, t0);
  EXPECT_EQ(d.overdue(t0 + seconds(1000000)), "");
  EXPECT_EQ(d.in_flight(), 1u);
}

TEST(CollectiveDeadlines, CompletionTestsRunOnAnotherThread) {
  // The NCCL watchdog polls from its own thread while the training thread adds.
  CollectiveDeadlines d(3600.0);
  auto flag = std::make_shared<std::atomic<bool>>(false);
  d.add("allreduce", [flag] { return flag->load(); });
  std::thread poller([&] {
    while (d.in_flight() > 0) {
      EXPECT_EQ(d.overdue(), "");
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  flag->store(true);
  poller.join();
  EXPECT_EQ(d.in_flight(), 0u);
}

TEST(WaitOrAbort, ReturnsOnceTheTestSaysDone) {
  int polls = 0;
  wait_or_abort(ProcessGroup::get(), "test", [&] { return ++polls == 1100; });
  EXPECT_EQ(polls, 1100);  // polled until done, then out
}

TEST(WaitOrAbort, TimedMpiCollectivesStillSumAcrossRanks) {
  // The communicator's collectives are non-blocking requests behind wait_request now; they must
  // still give the same answers.
  const ProcessGroup& g = ProcessGroup::get();
  if (g.world() != 2) GTEST_SKIP() << "run under mpirun -np 2 (world is " << g.world() << ")";
  auto comm = make_communicator("mpi", tensor::Device::cpu(), g);
  Tensor t = Tensor::full({5}, static_cast<double>(g.rank() + 1), tensor::DType::kFloat32);
  comm->allreduce_sum(t);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(5, 3.0f));
  EXPECT_EQ(allreduce_host(g, g.rank() + 2.0), 5.0);
  EXPECT_EQ(allreduce_host(g, g.rank() + 2.0, /*max=*/true), 3.0);
  Tensor b = Tensor::full({3}, static_cast<double>(g.rank() * 10 + 1), tensor::DType::kFloat64);
  comm->broadcast(b, 1);
  EXPECT_EQ(b.to_vector<double>(), std::vector<double>(3, 11.0));
  Tensor mine = Tensor::full({2}, static_cast<double>(g.rank()), tensor::DType::kInt64);
  Tensor all = comm->allgather(mine);
  EXPECT_EQ(all.to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1, 1}));
  comm->barrier();
}

}  // namespace
}  // namespace mlai::dist

namespace mlai::dist {
namespace {

// On a GPU: the NCCL communicator of one process alone (world 1: NCCL needs no peers), so its
// collectives, their completion events and the watchdog thread that polls them run once on any
// single-GPU machine. Multi-rank NCCL needs several GPUs and is not tested here.
TEST(NcclCuda, OneRankCollectivesCompleteUnderTheWatchdog) {
  if (!tensor::cuda_available())
    GTEST_SKIP() << "no CUDA device: " << tensor::cuda_unavailable_reason();
#ifdef MLAI_WITH_CUDA
  const tensor::Device gpu = tensor::Device::cuda(0);
  tensor::set_current_device(gpu);
  auto comm = make_communicator("nccl", gpu, ProcessGroup::single());
  EXPECT_STREQ(comm->name(), "nccl");
  const std::vector<float> v{1.5f, -2.0f, 3.25f};
  Tensor t = Tensor::from_vector(v, {3}).to(gpu);
  auto work = comm->allreduce_sum_async(t);
  work->wait();  // the compute stream waits for the communication stream
  EXPECT_EQ(t.to(tensor::Device::cpu()).to_vector<float>(), v);  // a sum over one rank
  Tensor h = Tensor::from_vector(std::vector<double>{4.0, 5.0}, {2}).to(gpu);
  comm->broadcast(h, 0);
  EXPECT_EQ(h.to(tensor::Device::cpu()).to_vector<double>(), (std::vector<double>{4.0, 5.0}));
  const Tensor all = comm->allgather(t);
  EXPECT_EQ(all.shape(), (tensor::Shape{1, 3}));
  EXPECT_EQ(all.to(tensor::Device::cpu()).to_vector<float>(), v);
  // ZeRO stage 2's reduce-scatter (grouped ncclReduce calls): one rank's segment is the whole.
  Tensor recv = Tensor::zeros({3}, tensor::DType::kFloat32, gpu);
  comm->reduce_scatter_async(t, recv, {3})->wait();
  EXPECT_EQ(recv.to(tensor::Device::cpu()).to_vector<float>(), v);
  // ZeRO's gathers (grouped ncclBroadcast calls), an empty tensor among them.
  Tensor empty = Tensor::zeros({0}, tensor::DType::kFloat32, gpu);
  comm->broadcast_many_async({{&t, 0}, {&empty, 0}, {&h, 0}})->wait();
  EXPECT_EQ(t.to(tensor::Device::cpu()).to_vector<float>(), v);
  EXPECT_EQ(h.to(tensor::Device::cpu()).to_vector<double>(), (std::vector<double>{4.0, 5.0}));
  // Hybrid sharding's groups: a communicator split from this one (its own NCCL communicator,
  // the parent's stream), used between the parent's collectives.
  {
    auto sub = comm->split(0, 0);
    EXPECT_EQ(sub->world(), 1);
    EXPECT_EQ(sub->rank(), 0);
    Tensor s = Tensor::from_vector(std::vector<float>{0.25f, -7.0f}, {2}).to(gpu);
    auto sub_work = sub->allreduce_sum_async(s);
    comm->allreduce_sum_async(t)->wait();
    sub_work->wait();
    sub->broadcast_many_async({{&s, 0}})->wait();
    EXPECT_EQ(s.to(tensor::Device::cpu()).to_vector<float>(), (std::vector<float>{0.25f, -7.0f}));
    EXPECT_EQ(t.to(tensor::Device::cpu()).to_vector<float>(), v);
  }
  // A second of the watchdog's polling (it checks every 500 ms) with everything complete: it
  // must neither abort nor hang the communicator's destruction.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  comm.reset();
#endif
}

}  // namespace
}  // namespace mlai::dist
