// mlai_train's command line: bad flags and impossible combinations exit with code 2 and one
// line naming the flag; --help documents every flag.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <sys/wait.h>

namespace {

struct Result {
  int code;
  std::string out;
};

Result run(const std::string& args) {
  const std::string cmd = std::string(MLAI_BINARY_DIR) + "/bin/mlai_train " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  const int status = p ? pclose(p) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Cli, RejectsBadFlagsWithOneLineAndCode2) {
  const std::pair<const char*, const char*> cases[] = {
      {"--epochs 0", "--epochs"},
      {"--epochs x", "--epochs"},
      {"--no-such-flag", "no-such-flag"},
      {"--batch-size -3", "--batch-size"},
      {"--val-split 1.5", "--val-split"},
      {"--optimizer rmsprop --fast-dev-run", "rmsprop"},
      {"--arch vgg --fast-dev-run", "vgg"},
      {"--device tpu", "tpu"},
      {"--hidden 512,x", "--hidden"},
      {"--limit-train-batches 1.5", "--limit-train-batches"},
      {"--overfit-batches 2 --fast-dev-run", "--overfit-batches"},
      {"--nesterov --optimizer adam", "--nesterov"},
      {"--precision 16", "--precision"},
      {"--resume /no/such/file.h5", "/no/such/file.h5"},
      {"--lr-schedule linear --fast-dev-run", "linear"},
  };
  for (const auto& [args, needle] : cases) {
    const Result r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.out;
    EXPECT_EQ(lines(r.out), 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
}

TEST(Cli, MissingDataIsAClearError) {
  const Result r = run("--dataset mnist --data-dir /nonexistent/mnist --fast-dev-run");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("/nonexistent/mnist"), std::string::npos) << r.out;
}

TEST(Cli, HelpDocumentsEveryFlag) {
  const Result r = run("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* f : {"--arch", "--hidden", "--dataset", "--data-dir", "--val-split",
                        "--criterion", "--label-smoothing", "--optimizer", "--lr", "--momentum",
                        "--nesterov", "--weight-decay", "--lr-schedule", "--epochs",
                        "--batch-size", "--seed", "--device", "--workers", "--log-dir",
                        "--experiment-name", "--fast-dev-run", "--limit-train-batches",
                        "--limit-val-batches", "--overfit-batches", "--checkpoint-every",
                        "--resume", "--deterministic"})
    EXPECT_NE(r.out.find(f), std::string::npos) << f;
}

}  // namespace
