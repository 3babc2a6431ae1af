// Tests for io/metrics: confusion matrices checked against metrics computed by hand (and the
// zero-division convention of scikit-learn), and CsvLogger round trips including resume.
#include "io/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fs = std::filesystem;
using mlai::io::ConfusionMatrix;
using mlai::io::CsvLogger;

namespace {

// target    0 0 0 0 1 1 1 2 2 2
// predicted 0 0 1 2 1 1 0 2 2 1
// Matrix (rows true, cols predicted):  [2 1 1]   support 4, 3, 3
//                                      [1 2 0]   predicted (column sums) 3, 4, 3
//                                      [0 1 2]   accuracy 6/10
// precision = TP/predicted: 2/3, 2/4, 2/3       macro 11/18
// recall    = TP/support:   2/4, 2/3, 2/3       macro 11/18
// F1 = 2PR/(P+R): (2*2/3*1/2)/(7/6) = 4/7; (2*1/2*2/3)/(7/6) = 4/7; 2/3      macro 38/63
TEST(ConfusionMatrix, HandComputedThreeClasses) {
  const int64_t target[] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};
  const int64_t pred[] = {0, 0, 1, 2, 1, 1, 0, 2, 2, 1};
  ConfusionMatrix cm(3);
  cm.add(pred, target, 6);  // in two batches, as an evaluation loop would
  cm.add(pred + 6, target + 6, 4);
  EXPECT_EQ(cm.counts(), (std::vector<int64_t>{2, 1, 1, 1, 2, 0, 0, 1, 2}));
  EXPECT_EQ(cm.total(), 10);
  EXPECT_DOUBLE_EQ(cm.accuracy(), 0.6);
  EXPECT_DOUBLE_EQ(cm.precision(0), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cm.precision(1), 0.5);
  EXPECT_DOUBLE_EQ(cm.precision(2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cm.recall(0), 0.5);
  EXPECT_DOUBLE_EQ(cm.recall(1), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cm.recall(2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cm.f1(0), 4.0 / 7);
  EXPECT_DOUBLE_EQ(cm.f1(1), 4.0 / 7);
  EXPECT_DOUBLE_EQ(cm.f1(2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(cm.macro_precision(), 11.0 / 18);
  EXPECT_DOUBLE_EQ(cm.macro_recall(), 11.0 / 18);
  EXPECT_DOUBLE_EQ(cm.macro_f1(), 38.0 / 63);
}

// target 0 1 1 3, predicted 0 1 0 2: class 2 is predicted but has no samples, class 3 has a
// sample but is never predicted, so P(3), R(2) and both F1s are 0 (sklearn zero_division=0).
// P = 1/2, 1, 0, 0; R = 1, 1/2, 0, 0; F1 = 2/3, 2/3, 0, 0; macro F1 = (4/3)/4 = 1/3.
TEST(ConfusionMatrix, ZeroDivisionCountsAsZero) {
  const int64_t target[] = {0, 1, 1, 3};
  const int64_t pred[] = {0, 1, 0, 2};
  ConfusionMatrix cm(4);
  cm.add(pred, target, 4);
  EXPECT_DOUBLE_EQ(cm.precision(2), 0.0);
  EXPECT_DOUBLE_EQ(cm.recall(2), 0.0);
  EXPECT_DOUBLE_EQ(cm.precision(3), 0.0);
  EXPECT_DOUBLE_EQ(cm.recall(3), 0.0);
  EXPECT_DOUBLE_EQ(cm.f1(2), 0.0);
  EXPECT_DOUBLE_EQ(cm.f1(3), 0.0);
  EXPECT_DOUBLE_EQ(cm.macro_precision(), 1.5 / 4);
  EXPECT_DOUBLE_EQ(cm.macro_recall(), 1.5 / 4);
  EXPECT_DOUBLE_EQ(cm.macro_f1(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(ConfusionMatrix(2).accuracy(), 0.0);
}

TEST(ConfusionMatrix, MergeAndAddCounts) {
  const int64_t t1[] = {0, 1}, p1[] = {0, 0}, t2[] = {1, 1}, p2[] = {1, 0};
  ConfusionMatrix a(2), b(2);
  a.add(p1, t1, 2);
  b.add(p2, t2, 2);
  a.merge(b);
  EXPECT_EQ(a.counts(), (std::vector<int64_t>{1, 0, 2, 1}));
  std::vector<int64_t> summed = a.counts();  // what an allreduce would hand back
  a.add_counts(summed.data());
  EXPECT_EQ(a.counts(), (std::vector<int64_t>{2, 0, 4, 2}));
  a.reset();
  EXPECT_EQ(a.total(), 0);
  EXPECT_THROW(a.merge(ConfusionMatrix(3)), std::runtime_error);
}

TEST(ConfusionMatrix, RejectsOutOfRangeLabelsWithoutChangingCounts) {
  const int64_t target[] = {0, 1, 2}, pred[] = {0, 3, 1};
  ConfusionMatrix cm(3);
  try {
    cm.add(pred, target, 3);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("predicted label 3 at index 1"), std::string::npos);
  }
  EXPECT_EQ(cm.total(), 0);
}

TEST(ConfusionMatrix, ToStringWithNames) {
  const int64_t target[] = {0, 1, 1}, pred[] = {0, 1, 0};
  ConfusionMatrix cm(2, {"cat", "dog"});
  cm.add(pred, target, 3);
  EXPECT_EQ(cm.to_string(),
            "true\\pred  cat  dog\n"
            "cat          1    0\n"
            "dog          1    1\n");
  EXPECT_NE(cm.report().find("macro avg"), std::string::npos);
  EXPECT_THROW(ConfusionMatrix(3, {"a", "b"}), std::runtime_error);
}

class CsvLoggerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() /
             ("mlai_csv_test_" + std::to_string(getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".csv"))
                .string();
    fs::remove(path_);
  }
  void TearDown() override { fs::remove(path_); }
  std::string contents() {
    std::ifstream in(path_, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::string path_;
};

TEST_F(CsvLoggerTest, RoundTripAndResume) {
  {
    CsvLogger log(path_, {"epoch", "loss", "note"});
    log.log({{"epoch", 1}, {"loss", 0.5}, {"note", "a,b \"q\""}});
    EXPECT_EQ(contents(), "epoch,loss,note\n1,0.5,\"a,b \"\"q\"\"\"\n");  // flushed per row
    log.log({{"epoch", int64_t(2)}, {"loss", 0.25f}});                    // note left empty
  }
  {
    CsvLogger log(path_, {"epoch", "loss", "note"});  // same header: append, no second header
    log.log({{"epoch", 3}, {"loss", 1.0 / 3}});
  }
  EXPECT_EQ(contents(), "epoch,loss,note\n1,0.5,\"a,b \"\"q\"\"\"\n2,0.25,\n3,0.3333333333,\n");
}

TEST_F(CsvLoggerTest, ErrorsNameTheFile) {
  {
    CsvLogger log(path_, {"epoch", "loss"});
    try {
      log.log({{"acc", 1}});
      FAIL() << "expected an exception";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(path_), std::string::npos);
      EXPECT_NE(std::string(e.what()).find("unknown column 'acc'"), std::string::npos);
    }
  }
  try {
    CsvLogger other(path_, {"epoch", "acc"});
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path_), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("differs"), std::string::npos);
  }
  EXPECT_THROW(CsvLogger(path_, {"a", "a"}), std::runtime_error);
  EXPECT_THROW(CsvLogger("/nonexistent-dir/x.csv", {"a"}), std::runtime_error);
}

// A resumed run of a newer mlai that logs more columns (at the end): the file takes the longer
// header and keeps its rows; dropping or reordering columns is still an error.
TEST_F(CsvLoggerTest, ResumeWithColumnsAddedAtTheEnd) {
  std::ofstream(path_, std::ios::binary) << "step,loss\n1,0.5\n";
  {
    CsvLogger log(path_, {"step", "loss", "top5"});
    log.log({{"step", 2}, {"loss", 0.25}, {"top5", 1}});
  }
  EXPECT_EQ(contents(), "step,loss,top5\n1,0.5\n2,0.25,1\n");
  EXPECT_THROW(CsvLogger(path_, {"step", "loss"}), std::runtime_error);
  EXPECT_THROW(CsvLogger(path_, {"loss", "step", "top5", "x"}), std::runtime_error);
}

TEST_F(CsvLoggerTest, ResumeAfterPartialRowStartsANewLine) {
  std::ofstream(path_, std::ios::binary) << "step,loss\n1,0.5\n2,0.";  // crashed mid-row
  {
    CsvLogger log(path_, {"step", "loss"});
    log.log({{"step", 3}, {"loss", 0.125}});
  }
  EXPECT_EQ(contents(), "step,loss\n1,0.5\n2,0.\n3,0.125\n");
}

}  // namespace
