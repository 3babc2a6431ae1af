// GoogleTest main for the data-parallel suites: run under `mpirun -np 2` by ctest. Every rank
// runs every test; the exit code is non-zero if any rank saw a failure.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>

#include "dist/process_group.h"
#include "kernels/parallel.h"

namespace {
// The other ranks' printer: their failures only, each with its rank, test and place.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  // (The test's name is kept here: asking gtest for it while it reports a result deadlocks.)
  void OnTestStart(const ::testing::TestInfo& t) override {
    test_ = std::string(t.test_suite_name()) + "." + t.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s failed at %s:%d\n%s\n", rank_, test_.c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.message());
  }

 private:
  int rank_;
  std::string test_;
};
}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& g = mlai::dist::ProcessGroup::init(&argc, &argv);
  mlai::kernels::cpu::configure_threads(g.local_world());  // as mlai_train does
  // Only rank 0 prints gtest's progress; the others print their failures alone.
  if (g.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(g.rank()));
  }
  const int local = RUN_ALL_TESTS();
  int any = local;
  if (g.mpi()) MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (g.rank() != 0 && local != 0) std::fprintf(stderr, "[rank %d] tests failed\n", g.rank());
  g.finalize();
  return any;
}
