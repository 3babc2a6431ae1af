// Tests for io/tensorboard: CRC32C known vectors, the written file checked byte by byte by a
// small TFRecord + protobuf reader (tb_reader.h), histogram bucketing, and read-backs through
// TensorBoard's own Python readers (scalars, histograms) and HParams plugin.
#include "io/tensorboard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <vector>

#include "tb_reader.h"

#ifndef MLAI_SOURCE_DIR
#define MLAI_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using namespace mlai::io;
using mlai::testing::decode_scalar;
using mlai::testing::Field;
using mlai::testing::parse_proto;
using mlai::testing::read_records;
using mlai::testing::Scalar;

namespace {

class TensorBoardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlai_tb_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  struct ScriptRun {
    std::string cmd, out, err;
    int rc;
  };
  // Runs `python3 test/io/<script> <dir_>`: its standard output, error and exit status.
  ScriptRun run_script(const std::string& script) const {
    ScriptRun r;
    const std::string err = (dir_ / "stderr.txt").string();
    r.cmd = "python3 '" + std::string(MLAI_SOURCE_DIR) + "/test/io/" + script + "' '" +
            dir_.string() + "' 2>'" + err + "'";
    FILE* pipe = popen(r.cmd.c_str(), "r");
    if (pipe == nullptr) return {r.cmd, "", "popen failed", -1};
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) r.out.append(buf, n);
    r.rc = pclose(pipe);
    std::ifstream errs(err);
    r.err.assign(std::istreambuf_iterator<char>(errs), std::istreambuf_iterator<char>());
    return r;
  }
  fs::path dir_;
};

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  std::string ones(32, '\xff');
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);  // RFC 3720 B.4
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST_F(TensorBoardTest, WritesValidRecords) {
  std::string path;
  {
    EventWriter w((dir_ / "run").string());  // the directory does not exist yet
    path = w.path();
    EXPECT_NE(fs::path(path).filename().string().find("events.out.tfevents."), std::string::npos);
    w.add_scalar("train/loss", 2.5f, 0, 1000.25);
    w.add_scalar("train/loss", 0.125f, 100, 1001.5);
    w.add_scalar("val/acc", 0.875f, 1LL << 40, 1002.0);
    w.add_scalar("neg", -3.0f, -1, 1003.0);
  }  // the destructor flushes
  auto records = read_records(path);
  ASSERT_EQ(records.size(), 5u);
  bool has_version = false;
  for (const Field& f : parse_proto(records[0])) {
    has_version |= f.number == 3 && f.bytes == "brain.Event:2";
  }
  EXPECT_TRUE(has_version);
  std::vector<Scalar> want = {{"train/loss", 0, 2.5f, 1000.25},
                              {"train/loss", 100, 0.125f, 1001.5},
                              {"val/acc", 1LL << 40, 0.875f, 1002.0},
                              {"neg", -1, -3.0f, 1003.0}};
  for (size_t i = 0; i < want.size(); ++i) {
    Scalar got = decode_scalar(records[i + 1]);
    EXPECT_EQ(got.tag, want[i].tag);
    EXPECT_EQ(got.step, want[i].step);
    EXPECT_EQ(got.value, want[i].value);
    EXPECT_EQ(got.wall_time, want[i].wall_time);
  }
}

TEST_F(TensorBoardTest, TwoWritersGetDistinctFiles) {
  EventWriter a(dir_.string()), b(dir_.string());
  EXPECT_NE(a.path(), b.path());
  a.add_scalar("x", 1.0f, 1);
  b.add_scalar("x", 2.0f, 1);
  a.flush();
  b.flush();
  EXPECT_EQ(read_records(a.path()).size(), 2u);
  EXPECT_EQ(read_records(b.path()).size(), 2u);
}

TEST_F(TensorBoardTest, TensorBoardPythonReadsOurFile) {
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "tensorboard Python package not installed (pip install tensorboard)";
  }
  std::map<std::pair<std::string, int64_t>, float> want;
  {
    EventWriter w(dir_.string());
    for (int64_t step = 0; step < 50; step += 10) {
      float loss = 2.0f / float(step + 1) + 0.1f;
      w.add_scalar("train/loss", loss, step);
      want[{"train/loss", step}] = loss;
    }
    w.add_scalar("val/acc", 0.8765f, 40);
    want[{"val/acc", 40}] = 0.8765f;
  }
  const ScriptRun run = run_script("read_tensorboard.py");
  ASSERT_EQ(run.rc, 0) << run.cmd << "\n" << run.err;
  const std::string& out = run.out;
  const std::string& err_text = run.err;

  std::map<std::pair<std::string, int64_t>, float> got;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    auto c1 = line.find(','), c2 = line.rfind(',');
    ASSERT_NE(c1, c2) << line;
    got[{line.substr(0, c1), std::stoll(line.substr(c1 + 1, c2 - c1 - 1))}] =
        float(std::stod(line.substr(c2 + 1)));
  }
  EXPECT_EQ(got, want) << out << err_text;
}

// Histograms: the moments are exact, every finite value is in one bucket, the buckets are
// TensorFlow's (about 10% wide, edges at 0 and +-1e-12 x 1.1^k), empty ends are dropped and
// an empty run inside is one bucket.
TEST(TensorBoardHistogram, BucketsHoldEveryValueOnce) {
  std::vector<float> v{-2.0f, -0.5f, 0.0f, 0.0f, 0.3f, 1.0f, 1.04f, 5.0f,
                       std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity()};
  const Histogram h = make_histogram(v.data(), v.size());
  EXPECT_EQ(h.num, 8);
  EXPECT_EQ(h.min, -2.0);
  EXPECT_EQ(h.max, 5.0);
  double sum = 0, sq = 0;
  for (size_t i = 0; i < 8; ++i) {
    sum += v[i];
    sq += double(v[i]) * v[i];
  }
  EXPECT_DOUBLE_EQ(h.sum, sum);
  EXPECT_DOUBLE_EQ(h.sum_squares, sq);
  ASSERT_EQ(h.limits.size(), h.counts.size());
  ASSERT_FALSE(h.counts.empty());
  EXPECT_GT(h.counts.front(), 0);
  EXPECT_GT(h.counts.back(), 0);
  for (size_t i = 1; i < h.limits.size(); ++i) {
    EXPECT_LT(h.limits[i - 1], h.limits[i]);
    EXPECT_FALSE(h.counts[i] == 0 && h.counts[i - 1] == 0) << "two empty buckets at " << i;
  }
  // Each value in the bucket [previous limit, limit): recount from the limits alone.
  std::vector<double> recount(h.counts.size(), 0);
  for (size_t i = 0; i < 8; ++i) {
    const size_t b = static_cast<size_t>(
        std::upper_bound(h.limits.begin(), h.limits.end(), double(v[i])) - h.limits.begin());
    ASSERT_LT(b, recount.size()) << v[i];
    recount[b] += 1;
  }
  EXPECT_EQ(recount, h.counts);
  // The bucket of 5.0 is about 10% wide: its limit is within (5, 5.5].
  const size_t b5 = static_cast<size_t>(
      std::upper_bound(h.limits.begin(), h.limits.end(), 5.0) - h.limits.begin());
  EXPECT_GT(h.limits[b5], 5.0);
  EXPECT_LE(h.limits[b5], 5.5);
  const Histogram empty = make_histogram(v.data() + 8, 2);  // NaN and inf only
  EXPECT_EQ(empty.num, 0);
  EXPECT_TRUE(empty.counts.empty());
}

// TensorBoard's own readers take our histograms: the EventAccumulator (HISTOGRAMS data) and
// the dashboard's conversion to [left, right, count] rows, with every value counted.
TEST_F(TensorBoardTest, TensorBoardPythonReadsOurHistograms) {
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "tensorboard Python package not installed (pip install tensorboard)";
  }
  std::vector<float> w(1000);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * float(i)) * 0.05f;
  {
    EventWriter ew(dir_.string());
    ew.add_histogram("weights/fc.weight", w, 7);
    ew.add_histogram("weights/fc.weight", {1.0f, 2.0f, 3.0f}, 14);
  }
  const ScriptRun run = run_script("read_histograms.py");
  ASSERT_EQ(run.rc, 0) << run.cmd << "\n" << run.err;
  std::istringstream lines(run.out);
  std::vector<std::string> got;
  for (std::string line; std::getline(lines, line);) got.push_back(line);
  ASSERT_EQ(got.size(), 2u) << run.out << run.err;
  const Histogram h = make_histogram(w.data(), w.size());
  std::istringstream first(got[0]);
  std::string tag;
  int64_t step = 0, buckets = 0, rows = 0;
  double num = 0, mn = 0, mx = 0, sum = 0, sq = 0, in_buckets = 0, in_rows = 0;
  first >> tag >> step >> num >> mn >> mx >> sum >> sq >> buckets >> in_buckets >> rows >> in_rows;
  EXPECT_EQ(tag, "weights/fc.weight");
  EXPECT_EQ(step, 7);
  EXPECT_EQ(num, 1000);
  EXPECT_EQ(mn, h.min);
  EXPECT_EQ(mx, h.max);
  EXPECT_DOUBLE_EQ(sum, h.sum);
  EXPECT_EQ(buckets, static_cast<int64_t>(h.counts.size()));
  EXPECT_EQ(in_buckets, 1000);
  EXPECT_GT(rows, 0);
  EXPECT_EQ(in_rows, 1000);
  EXPECT_EQ(got[1].rfind("weights/fc.weight 14 3.0 1.0 3.0 6.0 14.0 ", 0), 0u) << got[1];
}

// TensorBoard's IMAGES tab: its EventAccumulator takes our image events (size, PNG bytes).
TEST_F(TensorBoardTest, TensorBoardPythonReadsOurImages) {
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "tensorboard Python package not installed (pip install tensorboard)";
  }
  const std::string png(100, 'x');  // (TensorBoard serves the bytes; it does not decode them)
  {
    EventWriter ew(dir_.string());
    ew.add_image("train/images", png, 32, 152, 1, 0);
    ew.add_image("train/images", png + "y", 32, 152, 1, 18);
  }
  const ScriptRun run = run_script("read_images.py");
  ASSERT_EQ(run.rc, 0) << run.cmd << "\n" << run.err;
  EXPECT_EQ(run.out, "train/images 0 152 32 100\ntrain/images 18 152 32 101\n") << run.err;
}

// TensorBoard's HPARAMS tab: two runs' hyperparameters (a number, a string, a bool each), their
// scalars as metric columns and their end status, as TensorBoard's own HParams plugin reports
// them (test/io/read_hparams.py asks it, the way the tab's web page does).
TEST_F(TensorBoardTest, TensorBoardsHParamsPluginListsOurRuns) {
  if (std::system("python3 -c 'import tensorboard, werkzeug' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "tensorboard Python package not installed (pip install tensorboard)";
  }
  {
    EventWriter a((dir_ / "a").string()), b((dir_ / "b").string());
    a.add_hparams({{"lr", 0.001}, {"arch", std::string("mlp")}, {"sync_bn", false}}, 1000.0);
    b.add_hparams({{"lr", 0.25}, {"arch", std::string("resnet18")}, {"sync_bn", true}}, 1000.0);
    a.add_scalar("val/accuracy", 0.5f, 10);
    b.add_scalar("val/accuracy", 0.75f, 10);
    b.add_scalar("val/accuracy", 0.875f, 20);  // the tab shows the last value
    a.end_hparams_session(true, 1001.0);
    b.end_hparams_session(false, 1001.0);
  }
  const ScriptRun run = run_script("read_hparams.py");
  ASSERT_EQ(run.rc, 0) << run.cmd << "\n" << run.err;
  const std::string& out = run.out;
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 2u) << out;
  EXPECT_EQ(lines[0],
            "a\tSTATUS_SUCCESS\t{\"arch\": \"mlp\", \"lr\": 0.001, \"sync_bn\": false}\t"
            "{\"val/accuracy\": 0.5}");
  EXPECT_EQ(lines[1],
            "b\tSTATUS_FAILURE\t{\"arch\": \"resnet18\", \"lr\": 0.25, \"sync_bn\": true}\t"
            "{\"val/accuracy\": 0.875}");
}

}  // namespace
