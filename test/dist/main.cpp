// GoogleTest main for the data-parallel suites: run under `mpirun -np 2` by ctest. Every rank
// runs every test; the exit code is non-zero if any rank saw a failure.
#include <gtest/gtest.h>
#include <mpi.h>

#include "dist/process_group.h"
#include "kernels/parallel.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto& g = mlai::dist::ProcessGroup::init(&argc, &argv);
  mlai::kernels::cpu::configure_threads(g.local_world());  // as mlai_train does
  // Only rank 0 prints gtest's progress; failures on any rank still print (listener stays).
  if (g.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int local = RUN_ALL_TESTS();
  int any = local;
  if (g.mpi()) MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (g.rank() != 0 && local != 0) std::fprintf(stderr, "[rank %d] tests failed\n", g.rank());
  g.finalize();
  return any;
}
