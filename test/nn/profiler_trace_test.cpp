// --profiler-trace on the trainer, on the small synthetic MNIST-format set: trace.json holds
// exactly the chosen steps (across an epoch's end, with its validation), each with its data
// wait, forward (by module), backward (by op) and optimizer step inside it, and the data
// workers' batches on their own tracks; accumulation names the batches; a range training never
// reaches writes nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/trainer.h"
#include "tensor/trace.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

struct Span {
  std::string name, cat;
  double start, end;
  int pid, tid;
};

std::vector<Span> read_spans(const std::string& path, nlohmann::json* all = nullptr) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  const nlohmann::json j = nlohmann::json::parse(in);
  if (all != nullptr) *all = j;
  std::vector<Span> out;
  for (const auto& e : j.at("traceEvents"))
    if (e.at("ph") == "X") {
      const double ts = e.at("ts").get<double>();
      out.push_back({e.at("name"), e.at("cat"), ts, ts + e.at("dur").get<double>(),
                     e.at("pid").get<int>(), e.at("tid").get<int>()});
    }
  return out;
}

bool inside(const Span& s, const Span& outer) {
  return s.start >= outer.start && s.end <= outer.end && s.pid == outer.pid;
}

// Steps 17 and 18 of an MLP's 2 x 18: the first epoch's last step, its validation, then the
// second epoch's first step.
TEST_F(TrainerTest, ProfilerTraceHoldsTheChosenStepsAndWhatRanInThem) {
  Config c = base();
  c.profiler_trace = "17:19";
  const FitResult r = Trainer(c).fit();
  nlohmann::json all;
  const std::vector<Span> spans = read_spans(r.version_dir + "/trace.json", &all);
  std::map<std::string, Span> steps;
  for (const Span& s : spans)
    if (s.name.rfind("step ", 0) == 0) steps.emplace(s.name, s);
  ASSERT_EQ(steps.size(), 2u);
  ASSERT_TRUE(steps.count("step 17") && steps.count("step 18"));
  const Span &s17 = steps.at("step 17"), &s18 = steps.at("step 18");
  EXPECT_LE(s17.end, s18.start);
  for (const Span* step : {&s17, &s18}) {
    std::map<std::string, int> in;
    for (const Span& s : spans)
      if (&s != step && inside(s, *step)) ++in[s.name];
    for (const char* what : {"data wait", "forward", "backward", "optimizer step", "Sequential",
                             "5 (Linear)", "1 + 2 (Linear + ReLU)", "LinearBackward",
                             "CrossEntropyBackward"})
      EXPECT_GE(in[what], 1) << what << " in " << step->name;
    EXPECT_EQ(in["LinearBackward"], 3) << step->name;  // the MLP's three layers
  }
  // The epoch's end between them: its validation, within neither step.
  int validations = 0;
  for (const Span& s : spans)
    if (s.name == "validation") {
      ++validations;
      EXPECT_GE(s.start, s17.end);
      EXPECT_LE(s.end, s18.start);
    }
  EXPECT_EQ(validations, 1);
  // On the training thread nothing before the first step or after the last; the two data
  // workers (--workers 2) assemble batches on tracks of their own, ahead of the steps.
  std::map<int, int> worker_batches;
  for (const Span& s : spans) {
    EXPECT_EQ(s.pid, 0);
    if (s.tid == 0) {
      EXPECT_GE(s.start, s17.start) << s.name;
      EXPECT_LE(s.end, s18.end + 1e-3) << s.name;
    } else {
      EXPECT_TRUE(s.tid == trace::kWorkerTrack || s.tid == trace::kWorkerTrack + 1) << s.tid;
      EXPECT_EQ(s.cat, "data");
      EXPECT_EQ(s.name.rfind("batch ", 0), 0u) << s.name;
      ++worker_batches[s.tid];
    }
  }
  EXPECT_EQ(worker_batches.size(), 2u) << "a span from each data worker";
  std::set<std::string> names;
  for (const auto& e : all.at("traceEvents"))
    if (e.at("ph") == "M" && e.contains("args") && e.at("args").contains("name"))
      names.insert(e.at("args").at("name").get<std::string>());
  EXPECT_TRUE(names.count("training thread") && names.count("data worker 0") &&
              names.count("data worker 1"));
  EXPECT_TRUE(std::any_of(names.begin(), names.end(),
                          [](const std::string& n) { return n.rfind("rank 0 (", 0) == 0; }))
      << "rank 0's process name";

  // The summary beside it: one row per name, the steps folded into one.
  std::ifstream sum(r.version_dir + "/trace_summary.txt");
  ASSERT_TRUE(sum.good());
  std::map<std::string, long> calls;
  for (std::string line; std::getline(sum, line);) {
    std::istringstream w(line);
    std::vector<std::string> words;
    for (std::string x; w >> x;) words.push_back(x);
    if (words.size() < 3 || !std::isdigit(static_cast<unsigned char>(words[0][0]))) continue;
    const std::string last = words.back(), before = words[words.size() - 2];
    calls[before == "step" ? "step " + last : last] = std::stol(words[0]);
  }
  EXPECT_EQ(calls["step N"], 2);
  EXPECT_EQ(calls["LinearBackward"], 6);  // 3 layers, 2 steps
  EXPECT_EQ(calls["validation"], 1);
}

TEST_F(TrainerTest, ProfilerTraceNamesAccumulatedBatchesAndSkipsRangesNotTrained) {
  Config c = base();
  c.epochs = 1;
  c.accumulate_grad_batches = 2;
  c.profiler_trace = "2:3";  // step 2: batches 4 and 5
  const FitResult r = Trainer(c).fit();
  std::vector<std::string> steps;
  for (const Span& s : read_spans(r.version_dir + "/trace.json"))
    if (s.name.rfind("step ", 0) == 0) steps.push_back(s.name);
  EXPECT_EQ(steps, (std::vector<std::string>{"step 2, batch 4", "step 2, batch 5"}));

  Config late = base();
  late.epochs = 1;
  late.profiler_trace = "100:105";  // 18 steps only
  const FitResult r2 = Trainer(late).fit();
  EXPECT_FALSE(std::filesystem::exists(r2.version_dir + "/trace.json"));

  Config bad = base();
  for (const char* spec : {"5", "5:5", "7:3", "-1:2", "a:b", "3:4x"}) {
    bad.profiler_trace = spec;
    EXPECT_THROW(bad.validate(), std::invalid_argument) << spec;
  }
}

}  // namespace
}  // namespace mlai::nn
