// The profiler's reports: the summary table's rows by name (steps and batches folded into one
// row each), totals and means on both clocks, shares of the steps' time and the order; the
// Chrome events' track names.
#include "nn/trace_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace mlai::nn {
namespace {

using trace::Event;

// The numbers of the table's row for (category, name), in column order.
std::vector<double> row(const std::string& table, const std::string& category,
                        const std::string& name, size_t* line_no = nullptr) {
  std::istringstream in(table);
  size_t i = 0;
  for (std::string line; std::getline(in, line); ++i) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    // The name is the last words, the category the one before it.
    std::istringstream nw(name);
    size_t name_words = 0;
    for (std::string x; nw >> x;) ++name_words;
    if (w.size() < name_words + 2) continue;
    std::string got;
    for (size_t k = w.size() - name_words; k < w.size(); ++k) got += (got.empty() ? "" : " ") + w[k];
    if (got != name || w[w.size() - name_words - 1] != category) continue;
    std::vector<double> nums;
    for (size_t k = 0; k + name_words + 1 < w.size(); ++k) {
      std::string x = w[k];
      if (!x.empty() && x.back() == '%') x.pop_back();
      nums.push_back(x == "-" ? -1.0 : std::stod(x));
    }
    if (line_no != nullptr) *line_no = i;
    return nums;
  }
  ADD_FAILURE() << "no row " << category << " / " << name << " in\n" << table;
  return {};
}

TEST(TraceReport, SummaryFoldsStepsAndAddsUpBothClocks) {
  std::vector<Event> ev = {
      {"step 3", "trainer", 0, 0, 1000},         {"forward", "trainer", 0, 10, 300},
      {"layer1 (Conv2d)", "forward", 0, 20, 100}, {"step 4", "trainer", 0, 1000, 3000},
      {"forward", "trainer", 0, 1010, 500},      {"batch 12", "data", trace::kWorkerTrack, 0, 40},
      {"batch 13", "data", trace::kWorkerTrack + 1, 0, 60},
      // the GPU's copies: the steps took 4000 us there, the forward 3000 (it is host-bound
      // on the host, GPU-bound on the GPU)
      {"step 3", "trainer", trace::kGpuTrack, 5, 1500}, {"forward", "trainer", trace::kGpuTrack, 20, 1200},
      {"step 4", "trainer", trace::kGpuTrack, 1505, 2500}, {"forward", "trainer", trace::kGpuTrack, 1510, 1800},
  };
  const std::string t = trace_summary(ev);
  EXPECT_NE(t.find("GPU ms"), std::string::npos) << t;
  // calls, host total, host mean, GPU total, GPU mean, share of the steps' GPU time
  size_t step_line = 0, fwd_line = 0;
  const std::vector<double> step = row(t, "trainer", "step N", &step_line);
  ASSERT_EQ(step.size(), 6u);
  EXPECT_EQ(step[0], 2);
  EXPECT_NEAR(step[1], 4.0, 1e-9);   // 1000 + 3000 us
  EXPECT_NEAR(step[2], 2.0, 1e-9);
  EXPECT_NEAR(step[3], 4.0, 1e-9);   // 1500 + 2500 us
  EXPECT_NEAR(step[5], 100.0, 1e-9);
  const std::vector<double> fwd = row(t, "trainer", "forward", &fwd_line);
  ASSERT_EQ(fwd.size(), 6u);
  EXPECT_NEAR(fwd[1], 0.8, 1e-9);
  EXPECT_NEAR(fwd[3], 3.0, 1e-9);
  EXPECT_NEAR(fwd[4], 1.5, 1e-9);
  EXPECT_NEAR(fwd[5], 75.0, 1e-9);  // 3000 of the steps' 4000 GPU us
  EXPECT_LT(step_line, fwd_line);    // by GPU total
  const std::vector<double> batch = row(t, "data", "batch N");
  ASSERT_EQ(batch.size(), 6u);
  EXPECT_EQ(batch[0], 2);
  EXPECT_NEAR(batch[1], 0.1, 1e-9);
  EXPECT_EQ(batch[3], -1);  // no GPU copy: "-"
  const std::vector<double> conv = row(t, "forward", "layer1 (Conv2d)");
  ASSERT_EQ(conv.size(), 6u);
  EXPECT_EQ(conv[0], 1);

  // Host only: ordered by the host's totals, shares of the host's step time, no GPU columns.
  ev.resize(7);
  const std::string h = trace_summary(ev);
  EXPECT_EQ(h.find("GPU ms"), std::string::npos) << h;
  size_t hs = 0, hf = 0;
  const std::vector<double> hstep = row(h, "trainer", "step N", &hs);
  const std::vector<double> hfwd = row(h, "trainer", "forward", &hf);
  ASSERT_EQ(hfwd.size(), 4u);
  EXPECT_NEAR(hfwd[3], 20.0, 1e-9);  // 800 of 4000 us
  EXPECT_LT(hs, hf);
  // max_rows keeps the header and the largest rows.
  const std::string top = trace_summary(ev, 2);
  EXPECT_EQ(std::count(top.begin(), top.end(), '\n'), 3);
  EXPECT_NE(top.find("step N"), std::string::npos);
  EXPECT_EQ(top.find("batch N"), std::string::npos);
}

TEST(TraceReport, ChromeEventsNameEveryTrack) {
  const std::vector<Event> ev = {{"step 1", "trainer", 0, 0, 10},
                                 {"step 1", "trainer", trace::kGpuTrack, 2, 12},
                                 {"batch 1", "data", trace::kWorkerTrack + 2, 0, 5},
                                 {"bucket 0", "comm", trace::kBucketTrack + 1, 3, 4}};
  const nlohmann::json j = chrome_trace_events(ev, 5, "rank 5");
  std::map<int, std::string> names;
  int spans = 0;
  for (const auto& e : j) {
    EXPECT_EQ(e.at("pid"), 5);
    if (e.at("ph") == "X") ++spans;
    if (e.at("name") == "thread_name") names[e.at("tid")] = e.at("args").at("name");
  }
  EXPECT_EQ(spans, 4);
  EXPECT_EQ(names[0], "training thread");
  EXPECT_NE(names[trace::kGpuTrack].find("GPU"), std::string::npos);
  EXPECT_EQ(names[trace::kWorkerTrack + 2], "data worker 2");
  EXPECT_EQ(names[trace::kBucketTrack + 1], "gradient bucket 1 allreduce");
}

}  // namespace
}  // namespace mlai::nn
