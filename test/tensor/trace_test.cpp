// The trace recorder: nothing while off, nested spans with their times, explicit events, and
// stop() handing over (and clearing) what was recorded.
#include "tensor/trace.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

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

}  // namespace
}  // namespace mlai::trace
