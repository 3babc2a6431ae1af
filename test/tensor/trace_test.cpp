// The trace recorder: nothing while off, nested spans with their times, explicit events, and
// stop() handing over (and clearing) what was recorded; with a GPU, the GPU track's copies of
// the training thread's spans, timed by the GPU (TraceCuda, skipped without one).
#include "tensor/trace.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "tensor/device.h"
#include "tensor/ops.h"
#include "tensor/stream.h"
#include "tensor/tensor.h"

namespace mlai::trace {
namespace {

TEST(Trace, RecordsSpansOnlyWhileStarted) {
  { Span off("before", "test"); }
  EXPECT_FALSE(enabled());
  start();
  EXPECT_TRUE(enabled());
  {
    Span outer("outer", "test");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    {
      Span inner(std::string("inner"), "test", 3);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  record("explicit", "comm", kBucketTrack + 1, 10.0, 35.0);
  const std::vector<Event> ev = stop();
  EXPECT_FALSE(enabled());
  ASSERT_EQ(ev.size(), 3u);  // in the order they ended
  EXPECT_EQ(ev[0].name, "inner");
  EXPECT_EQ(ev[0].track, 3);
  EXPECT_EQ(ev[1].name, "outer");
  EXPECT_EQ(ev[1].category, "test");
  EXPECT_EQ(ev[1].track, 0);
  // The inner span lies within the outer one; each lasted at least its sleep.
  EXPECT_GE(ev[0].start_us, ev[1].start_us);
  EXPECT_LE(ev[0].start_us + ev[0].duration_us, ev[1].start_us + ev[1].duration_us);
  EXPECT_GE(ev[0].duration_us, 2000.0);
  EXPECT_GE(ev[1].duration_us, 4000.0);
  EXPECT_EQ(ev[2].name, "explicit");
  EXPECT_DOUBLE_EQ(ev[2].start_us, 10.0);
  EXPECT_DOUBLE_EQ(ev[2].duration_us, 25.0);
  // Stopped: nothing more is kept, and the next start begins empty.
  record("late", "comm", 0, 0, 1);
  { Span after("after", "test"); }
  start();
  EXPECT_TRUE(stop().empty());
}

TEST(Trace, NoGpuTrackWithoutAGpu) {
  start(tensor::Device::cpu());
  { Span s("cpu work", "test"); }
  const std::vector<Event> ev = stop();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].track, 0);
}

// A span around a large matrix product: on the host it lasts as long as the launch, on the GPU
// as long as the product. Spans nest on the GPU as on the host; another thread's spans and
// spans after stop() get no GPU copy.
TEST(TraceCuda, GpuTrackTimesTheWorkNotTheLaunch) {
  using tensor::Tensor;
  if (!tensor::cuda_available())
    GTEST_SKIP() << "no CUDA device: " << tensor::cuda_unavailable_reason();
  const tensor::Device gpu = tensor::Device::cuda(0);
  tensor::Generator gen(3);
  const int64_t n = 4096;
  const Tensor a = Tensor::normal({n, n}, 0.0, 1.0, gen).to(gpu);
  const Tensor b = Tensor::normal({n, n}, 0.0, 1.0, gen).to(gpu);
  Tensor c = tensor::matmul(a, b);  // (cuBLAS's setup outside the trace)
  tensor::current_stream(gpu).synchronize();
  start(gpu);
  {
    Span outer("outer", "test");
    {
      Span product("product", "test");
      for (int i = 0; i < 4; ++i) c = tensor::matmul(a, b);  // ~0.5 TFLOP in float32: ms
    }
    std::thread([] { Span other("other thread", "test"); }).join();
  }
  const std::vector<Event> ev = stop();
  std::map<std::string, Event> host, dev;
  for (const Event& e : ev) (e.track == kGpuTrack ? dev : host)[e.name] = e;
  ASSERT_EQ(host.size(), 3u);
  ASSERT_EQ(dev.size(), 2u) << "outer and product on the GPU track, not the other thread's span";
  ASSERT_TRUE(dev.count("outer") && dev.count("product"));
  const Event &p = dev.at("product"), &o = dev.at("outer");
  // 4 x 2 n^3 = 550 GFLOP in float32: over 5 ms on any GPU below 100 TFLOPS of FMA.
  EXPECT_GT(p.duration_us, 1000.0);
  EXPECT_GT(p.duration_us, 3 * host.at("product").duration_us)
      << "the host only launched the products";
  EXPECT_GE(p.start_us, o.start_us);
  EXPECT_LE(p.start_us + p.duration_us, o.start_us + o.duration_us + 1.0);
  // On the host's clock: the GPU starts the product after the host opened its span, and
  // (with the clocks aligned to ~10 us) not long after: the stream was idle.
  EXPECT_GE(p.start_us, host.at("product").start_us - 50.0);
  EXPECT_LE(p.start_us, host.at("product").start_us + p.duration_us);
  { Span late("late", "test"); }
  start(gpu);
  EXPECT_TRUE(stop().empty());
}

}  // namespace
}  // namespace mlai::trace
