// CUDA graphs (tensor/cuda_graph.h): a clear error on the CPU; on a GPU, a captured sequence of
// ops replays on new input values like the eager ops, allocates from the graph's own pool
// (eager work after the capture never receives the graph's memory), and reports capturing()
// only while the capture runs. The GPU cases skip without one.
#include "tensor/cuda_graph.h"

#include <gtest/gtest.h>

#include <set>

#include "tensor/allocator.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

TEST(CudaGraph, CpuIsAClearError) {
  CudaGraph g;
  EXPECT_FALSE(capturing(Device::cpu()));
  try {
    g.capture(Device::cpu(), [] {});
    FAIL() << "a CPU capture was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA device"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(g.captured());
  EXPECT_THROW(g.replay(), std::logic_error);
}

TEST(CudaGraph, ReplaysOnNewInputsInItsOwnMemory) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  Generator gen(3);
  Tensor x = Tensor::uniform({1000}, -1, 1, gen, DType::kFloat32, gpu);
  auto f = [](const Tensor& v) { return relu(add(mul(v, v), scale(v, -0.5))); };
  const Tensor warm = f(x);  // kernels loaded, cache warm: as the trainer's warm-up steps do
  CudaGraph g;
  Tensor out;
  bool seen_capturing = false;
  g.capture(gpu, [&] {
    seen_capturing = capturing(gpu);
    out = f(x);
  });
  EXPECT_TRUE(seen_capturing);
  EXPECT_FALSE(capturing(gpu));
  ASSERT_TRUE(g.captured());
  // Eager allocations after the capture never land on the graph's output.
  std::set<void*> eager;
  for (int i = 0; i < 8; ++i) eager.insert(Tensor::empty({1000}, DType::kFloat32, gpu).data_ptr());
  EXPECT_EQ(eager.count(out.data_ptr()), 0u);
  for (int round = 0; round < 3; ++round) {
    x.copy_from(Tensor::uniform({1000}, -1, 1, gen, DType::kFloat32, gpu), true);
    g.replay();
    EXPECT_LE(max_rel_error(out, f(x)), 0.0) << "round " << round;
  }
}

}  // namespace
}  // namespace mlai::tensor
