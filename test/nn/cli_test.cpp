// mlai_train's command line: bad flags and impossible combinations exit with code 2 and one
// line naming the flag; --help documents every flag.
#include <gtest/gtest.h>

#include <fcntl.h>

#include <string>

#include "../run_program.h"

namespace {

using Result = mlai::testing::CliResult;
Result run(const std::string& args) { return mlai::testing::run_mlai_train(args); }
int lines(const std::string& s) { return mlai::testing::count_lines(s); }

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
      {"--nesterov --optimizer lamb", "--nesterov"},
      {"--optimizer lars --trust-coefficient 0", "--trust-coefficient"},
      {"--optimizer adamw --trust-clip", "--trust-clip"},
      {"--lr-schedule cosine_restarts --lr-restart-mult 0", "--lr-restart-mult"},
      {"--lr-restart-epochs 0", "--lr-restart-epochs"},
      {"--precision 8", "--precision"},
      {"--gradient-clip-val 1 --gradient-clip-algorithm max", "--gradient-clip-algorithm"},
      {"--gradient-clip-val -1", "--gradient-clip-val"},
      {"--early-stopping-patience 2 --early-stopping-monitor train_loss",
       "--early-stopping-monitor"},
      {"--early-stopping-patience 2 --val-split 0", "--early-stopping-patience"},
      {"--resume /no/such/file.h5", "/no/such/file.h5"},
      {"--lr-schedule triangular --fast-dev-run", "triangular"},
      {"--max-steps 0", "--max-steps"},
      {"--max-time 1:2:3:4:5", "--max-time"},
      {"--max-time 00:00:00:00", "--max-time"},
      {"--checkpoint-train-time-interval 30m", "--checkpoint-train-time-interval"},
      {"--epochs -1", "--epochs"},  // -1 only with --max-steps
      {"--save-top-k -2", "--save-top-k"},
      {"--lr-find sometimes", "--lr-find"},
      {"--lr-find --fast-dev-run", "--lr-find"},
      {"--checkpoint-monitor train_loss", "--checkpoint-monitor"},
      {"--test-ckpt first", "--test-ckpt"},
      {"--test-ckpt best --save-top-k 0", "--test-ckpt"},
      {"--lr-schedule multistep --fast-dev-run", "--lr-milestones"},
      {"--lr-schedule multistep --lr-milestones 30,20 --fast-dev-run", "--lr-milestones"},
      {"--lr-milestones 3,x", "--lr-milestones"},
      {"--profiler-trace 5:3", "--profiler-trace"},
      {"--float32-matmul-precision tf32", "--float32-matmul-precision"},
      {"--num-sanity-val-steps -3", "--num-sanity-val-steps"},
      {"--cudnn-benchmark maybe", "--cudnn-benchmark"},
      {"--dataset folder --fast-dev-run", "--data-dir"},
      {"--image-size 32 --fast-dev-run", "--image-size"},
      {"--dataset folder --data-dir . --image-size 0x4", "--image-size"},
      {"--dataset folder --data-dir . --image-channels 2", "--image-channels"},
      {"--mean 0.5 --fast-dev-run", "--mean"},
      {"--mean 0.5,0.5 --std 0.2 --fast-dev-run", "--std"},
      {"--mean 0.5,0.4,0.4 --std 0.2,0.2,0.2 --fast-dev-run", "--mean/--std"},
      {"--scale-batch-size always", "--scale-batch-size"},
      {"--lr-schedule polynomial --lr-power 0 --fast-dev-run", "--lr-power"},
      {"--scale-batch-size power --fast-dev-run", "--scale-batch-size"},
      {"--peak-tflops -1", "--peak-tflops"},
      {"--accumulation-schedule 0:2,0:4", "--accumulation-schedule"},
      {"--accumulation-schedule 0:2 --accumulate-grad-batches 2", "--accumulation-schedule"},
      {"--ddp-comm-hook topk", "--ddp-comm-hook"},
      {"--strategy deepspeed", "--strategy"},
      {"--strategy zero2 --ddp-comm-hook fp16", "--strategy zero2"},
      {"--strategy zero3 --ddp-comm-hook bf16", "--strategy zero3"},
      {"--strategy zero3 --backward-prefetch backward", "--backward-prefetch"},
      {"--strategy zero2 --forward-prefetch", "--forward-prefetch"},
      {"--backward-prefetch none", "--backward-prefetch"},
      {"--shard-size 2", "--shard-size"},
      {"--strategy zero3 --shard-size 0", "--shard-size"},
      {"--strategy hybrid_shard --shard-size half", "--shard-size"},
      {"--state-dict-type sharded", "--state-dict-type sharded"},
      {"--strategy zero3 --state-dict-type sharding", "--state-dict-type"},
      {"--ddp-comm-hook powersgd --powersgd-rank 0", "--powersgd-rank"},
      {"--random-erasing 1.5", "--random-erasing"},
      {"--auto-augment autoaugment", "--auto-augment"},
      {"--auto-augment ra --ra-magnitude 31", "--ra-magnitude"},
      {"--auto-augment ra --ra-num-ops 5", "--ra-num-ops"},
      {"--auto-augment augmix --augmix-severity 0", "--augmix-severity"},
      {"--random-erasing 0.5 --erasing-scale 0.4,0.1", "--erasing-scale"},
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
  const Result f = run("--dataset folder --data-dir /nonexistent/images --fast-dev-run");
  EXPECT_EQ(f.code, 1);
  EXPECT_EQ(lines(f.out), 1) << f.out;
  EXPECT_NE(f.out.find("image folder /nonexistent/images is not a directory"), std::string::npos)
      << f.out;
}

TEST(Cli, HelpDocumentsEveryFlag) {
  const Result r = run("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* f : {"--arch",
                        "--hidden",
                        "--dataset",
                        "--data-dir",
                        "--val-split",
                        "--criterion",
                        "--label-smoothing",
                        "--optimizer",
                        "--lr",
                        "--momentum",
                        "--nesterov",
                        "--weight-decay",
                        "--trust-coefficient",
                        "--trust-clip",
                        "--lr-schedule",
                        "--epochs",
                        "--batch-size",
                        "--seed",
                        "--device",
                        "--workers",
                        "--log-dir",
                        "--experiment-name",
                        "--fast-dev-run",
                        "--limit-train-batches",
                        "--limit-val-batches",
                        "--overfit-batches",
                        "--checkpoint-every",
                        "--resume",
                        "--deterministic",
                        "--max-steps",
                        "--max-time",
                        "--checkpoint-monitor",
                        "--save-top-k",
                        "--lr-find",
                        "--float32-matmul-precision",
                        "--num-sanity-val-steps",
                        "--cudnn-benchmark",
                        "--log-device-stats",
                        "--image-size",
                        "--image-channels",
                        "--mean",
                        "--std",
                        "--cache",
                        "--scale-batch-size"})
    EXPECT_NE(r.out.find(f), std::string::npos) << f;
}

}  // namespace

// SIGTERM (what Slurm sends at the time limit) stops training with a checkpoint and the
// conventional exit code 128 + 15; the checkpoint resumes.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "../nn/synthetic_data.h"

namespace {

// Lightning's trainer.test(ckpt_path=FILE) without training: --test-only takes the model and
// data settings of the checkpoint's run (here --hidden 32 and the data set, which the test
// command does not repeat) and tests its weights: the same test line as the run's own test of
// the same weights, in a new run directory; flags on the command line still win (a wrong
// --hidden is a clear error naming the file).
TEST(Cli, TestOnlyTestsACheckpointWithItsRunsSettings) {
  namespace fs = std::filesystem;
  const std::string root =
      (fs::temp_directory_path() / ("mlai_cli_test_only_" + std::to_string(getpid()))).string();
  fs::remove_all(root);
  mlai::testing::make_synthetic_mnist(root + "/data", 320, 64);
  const std::string logs = root + "/logs";
  const Result train = run("--dataset mnist --data-dir " + root + "/data --log-dir " + logs +
                           " --epochs 1 --batch-size 16 --hidden 32 --device cpu --workers 0 "
                           "--no-progress");
  ASSERT_EQ(train.code, 0) << train.out;
  auto test_line = [](const std::string& out) {
    const size_t a = out.find("test loss:");
    return a == std::string::npos ? std::string() : out.substr(a, out.find('\n', a) - a);
  };
  ASSERT_FALSE(test_line(train.out).empty()) << train.out;
  const std::string ckpt = logs + "/default/version_0/checkpoints/last.h5";
  const Result t = run("--test-only --test-ckpt " + ckpt + " --log-dir " + logs +
                       " --device cpu --workers 0 --no-progress");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_EQ(test_line(t.out), test_line(train.out)) << t.out;
  EXPECT_EQ(t.out.find("epoch:"), std::string::npos) << t.out;  // nothing trained
  EXPECT_TRUE(fs::exists(logs + "/default/version_1/metrics.csv")) << t.out;
  // --validate-only: the validation split of the checkpoint's run (its --val-split and --seed),
  // so the same numbers as the run's last validation.
  auto val_numbers = [](const std::string& out) {
    const size_t a = out.rfind("validation loss:");
    const size_t b = out.find("validation accuracy:", a);
    return a == std::string::npos || b == std::string::npos
               ? std::string()
               : out.substr(a, b + std::string("validation accuracy: 0.0000").size() - a);
  };
  ASSERT_FALSE(val_numbers(train.out).empty()) << train.out;
  const Result v = run("--validate-only --test-ckpt " + ckpt + " --log-dir " + logs +
                       " --device cpu --workers 0 --no-progress");
  ASSERT_EQ(v.code, 0) << v.out;
  EXPECT_EQ(val_numbers(v.out), val_numbers(train.out)) << v.out;
  EXPECT_EQ(test_line(v.out), "") << v.out;  // no test
  EXPECT_NE(v.out.find("validation confusion matrix"), std::string::npos) << v.out;
  EXPECT_EQ(run("--validate-only --test-ckpt " + ckpt + " --val-split 0").code, 2);
  EXPECT_EQ(run("--validate-only --test-only --test-ckpt " + ckpt).code, 2);
  const Result wrong = run("--test-only --test-ckpt " + ckpt + " --hidden 64 --log-dir " + logs +
                           " --device cpu --workers 0 --no-progress");
  EXPECT_NE(wrong.code, 0) << wrong.out;
  EXPECT_NE(wrong.out.find(ckpt + " does not match the model"), std::string::npos) << wrong.out;
  EXPECT_EQ(run("--test-only").code, 2);
  EXPECT_EQ(run("--test-only --test-ckpt " + ckpt + " --resume " + ckpt).code, 2);
  fs::remove_all(root);
}

TEST(Cli, SigtermSavesACheckpointAndExits) {
  namespace fs = std::filesystem;
  const std::string root = (fs::temp_directory_path() / ("mlai_cli_" + std::to_string(getpid()))).string();
  fs::remove_all(root);
  mlai::testing::make_synthetic_mnist(root + "/data", 6400, 100);
  const std::string bin = std::string(MLAI_BINARY_DIR) + "/bin/mlai_train";
  const std::string data = root + "/data", logs = root + "/logs", out = root + "/out.txt";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(bin.c_str(), bin.c_str(), "--dataset", "mnist", "--data-dir", data.c_str(),
          "--log-dir", logs.c_str(), "--epochs", "1000", "--batch-size", "8", "--workers", "1",
          "--device", "cpu", "--save-weights-only", "--async-checkpoint",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training has started (the first epoch line or enough time), then SIGTERM.
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::ifstream f(out);
    const std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (s.find("epoch: 01") != std::string::npos) break;
  }
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  std::ifstream f(out);
  const std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << s;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << s;
  EXPECT_NE(s.find("stopped by signal 15"), std::string::npos) << s;
  const std::string ckpt = logs + "/default/version_0/checkpoints/last.h5";
  EXPECT_TRUE(fs::exists(ckpt)) << s;
  // Under --save-weights-only the signal's last.h5 keeps the whole state (Adam's moments), and
  // --async-checkpoint's write is done before the exit: the run resumes.
  const Result r = run("--dataset mnist --data-dir " + data + " --log-dir " + logs +
                       " --epochs 1 --device cpu --resume " + ckpt);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
  fs::remove_all(root);
}

// --devices N, Lightning's devices=N: started alone, mlai_train starts N ranks itself (through
// mpirun) and they train data-parallel; under mpirun with another number of ranks it is a
// one-line error on rank 0 and a non-zero exit.
TEST(Cli, DevicesStartsTheRanksItself) {
  namespace fs = std::filesystem;
  const std::string root =
      (fs::temp_directory_path() / ("mlai_cli_devices_" + std::to_string(getpid()))).string();
  fs::remove_all(root);
  mlai::testing::make_synthetic_mnist(root + "/data", 640, 100);
  const std::string common = "--device cpu --dataset mnist --data-dir " + root +
                             "/data --epochs 1 --no-progress --workers 0 --log-dir " + root + "/logs";
  const Result r = run("--devices 2 " + common);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--devices 2: starting 2 processes: mpirun -np 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("data parallel: world size 2"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(root + "/logs/default/version_0/metrics.csv")) << r.out;
  const std::string mpirun = std::string("mpirun -np 2 --oversubscribe ") +
                             (geteuid() == 0 ? "--allow-run-as-root " : "") + MLAI_BINARY_DIR +
                             "/bin/mlai_train --devices 3 " + common + " 2>&1";
  FILE* p = popen(mpirun.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  EXPECT_NE(pclose(p), 0) << out;
  EXPECT_NE(out.find("mlai_train: error: --devices 3, but 2 rank(s) were started"), std::string::npos)
      << out;
  fs::remove_all(root);
}

}  // namespace
