// Settings files (mlai_train --config / --print-config, each run's config.yaml): they read back
// into the same settings, every key is a flag, the command line wins, bad files are one-line
// errors naming the file, and a run's saved config.yaml runs it again.
#include "nn/config_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../run_program.h"
#include "synthetic_data.h"

namespace {

namespace fs = std::filesystem;
using mlai::testing::count_lines;
using mlai::testing::run_mlai_train;

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("mlai_config_" + std::to_string(getpid()))).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  static std::string read(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  // The value printed for `key` by --print-config (the text after "key: ").
  static std::string value(const std::string& yaml, const std::string& key) {
    std::smatch m;
    if (!std::regex_search(yaml, m, std::regex("\n" + key + ": ([^\n]*)\n"))) return "<absent>";
    return m[1];
  }

  std::string dir_;
};

TEST_F(ConfigFileTest, PrintedSettingsReadBackToTheSameSettings) {
  const std::string weights = write("w.h5", "not read by --print-config");
  const std::string flag_sets[] = {
      // Negated flags, a list, a string that needs quoting, a limit that implies --epochs -1.
      "--hidden 512,256,64 --no-progress --no-overlap --lr-find only --max-steps 100 "
      "--data-dir '/tmp/my data # x' --experiment-name 'q\"x: y' --max-time 00:01:00:00 "
      "--optimizer sgd --nesterov --lr 3e-4 --precision 16 --limit-val-batches 0.25 "
      "--sync-bn --cuda-graphs --seed 7 --eps 1e-07",
      "--dataset hdf5 --data-path " + weights + " --cache --resume " + weights + " --pretrained " +
          weights + " --reset-head --batch-size 3",
      "--fast-dev-run 4 --arch resnet18_cifar --save-top-k -1",
  };
  for (const std::string& flags : flag_sets) {
    const auto printed = run_mlai_train(flags + " --print-config");
    ASSERT_EQ(printed.code, 0) << flags << "\n" << printed.out;
    const std::string file = write("printed.yaml", printed.out);
    const auto again = run_mlai_train("--config " + file + " --print-config");
    ASSERT_EQ(again.code, 0) << again.out;
    EXPECT_EQ(again.out, printed.out) << flags;
  }
  const std::string first = run_mlai_train(flag_sets[0] + " --print-config").out;
  EXPECT_EQ(value(first, "hidden"), "[512, 256, 64]");
  EXPECT_EQ(value(first, "no-progress"), "true");
  EXPECT_EQ(value(first, "epochs"), "-1");
  EXPECT_EQ(value(first, "lr"), "0.0003");
  EXPECT_EQ(value(first, "resume"), "null");
  EXPECT_EQ(value(first, "fast-dev-run"), "null");
  EXPECT_EQ(value(run_mlai_train(flag_sets[1] + " --print-config").out, "resume"), weights);
  EXPECT_EQ(value(run_mlai_train(flag_sets[2] + " --print-config").out, "fast-dev-run"), "4");
}

// Lightning's strategy names (Trainer(strategy="fsdp"), "deepspeed_stage_2") are mlai's ZeRO
// stages, on the command line and in a settings file alike; config.yaml keeps mlai's name.
TEST_F(ConfigFileTest, LightningStrategyNamesAreZeroStages) {
  for (const auto& [name, stage] : std::vector<std::pair<std::string, std::string>>{
           {"fsdp", "zero3"},
           {"deepspeed_stage_1", "zero1"},
           {"deepspeed_stage_2", "zero2"},
           {"deepspeed_stage_3", "zero3"},
           {"hybrid_shard", "hybrid_shard"},
           {"ddp", "ddp"}}) {
    const auto flag = run_mlai_train("--strategy " + name + " --print-config");
    ASSERT_EQ(flag.code, 0) << name << "\n" << flag.out;
    EXPECT_EQ(value(flag.out, "strategy"), stage) << name;
    const auto file =
        run_mlai_train("--config " + write("s.yaml", "strategy: " + name + "\n") + " --print-config");
    ASSERT_EQ(file.code, 0) << name << "\n" << file.out;
    EXPECT_EQ(value(file.out, "strategy"), stage) << name;
  }
}

TEST_F(ConfigFileTest, EveryKeyIsAFlagAndEverySettingHasAKey) {
  const auto printed = run_mlai_train("--print-config");
  const auto help = run_mlai_train("--help");
  ASSERT_EQ(printed.code, 0);
  std::set<std::string> keys;
  std::istringstream lines(printed.out);
  for (std::string l; std::getline(lines, l);) {
    if (l.empty() || l[0] == '#') continue;
    const std::string key = l.substr(0, l.find(':'));
    keys.insert(key);
    EXPECT_TRUE(std::regex_search(help.out, std::regex("--" + key + "[ {]"))) << key;
  }
  EXPECT_EQ(keys.size(), mlai::nn::to_json(mlai::nn::Config{}).size());
}

TEST_F(ConfigFileTest, CommandLineWinsAndSnakeCaseKeysWork) {
  const std::string file = write("c.yaml",
                                 "# a comment\n"
                                 "batch_size: 16        # Lightning's spelling\n"
                                 "lr: 0.1\n"
                                 "hidden: [32, 16]\n"
                                 "max-steps: 50\n"
                                 "lr-find: true\n"
                                 "resume: null\n");
  const auto r = run_mlai_train("--config " + file + " --lr 0.5 --print-config");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(value(r.out, "batch-size"), "16");
  EXPECT_EQ(value(r.out, "lr"), "0.5");
  EXPECT_EQ(value(r.out, "hidden"), "[32, 16]");
  EXPECT_EQ(value(r.out, "epochs"), "-1");  // max-steps alone, as on the command line
  EXPECT_EQ(value(r.out, "lr-find"), "apply");
  // fast_dev_run as Lightning writes it: 0/false is off, true is one batch, N is N; and a
  // bare --fast-dev-run is one batch, --fast-dev-run 0 off.
  for (const auto& [text, want] : std::vector<std::pair<std::string, std::string>>{
           {"fast_dev_run: 0\n", "null"},
           {"fast_dev_run: false\n", "null"},
           {"fast_dev_run: true\n", "1"},
           {"fast_dev_run: 3\n", "3"}}) {
    const auto d = run_mlai_train("--config " + write("d.yaml", text) + " --print-config");
    EXPECT_EQ(value(d.out, "fast-dev-run"), want) << text << d.out;
  }
  EXPECT_EQ(value(run_mlai_train("--fast-dev-run --print-config").out, "fast-dev-run"), "1");
  EXPECT_EQ(value(run_mlai_train("--fast-dev-run 0 --print-config").out, "fast-dev-run"), "null");
  // --epochs on the command line keeps its own value beside the file's max-steps.
  EXPECT_EQ(value(run_mlai_train("--config " + file + " --epochs 3 --print-config").out, "epochs"),
            "3");
}

TEST_F(ConfigFileTest, BadFilesAreOneLineErrorsNamingTheFileAndKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"bogus: 1\n", "unknown key 'bogus'"},
      {"trainer:\n  max_epochs: 3\n", "'trainer' holds a mapping"},
      {"lr: [1\n", "line 2"},
      {"lr: 1\nlr: 2\n", "'lr' is given twice"},
      {"batch_size: 1\nbatch-size: 2\n", "'batch-size' is given twice"},
      {"- lr\n", "expected a mapping"},
      {"hidden: [[1]]\n", "'hidden'"},
      {"config: other.yaml\n", "config"},
      {"[lr]: 0.1\n", "a key must be a name"},
  };
  for (const auto& [text, needle] : cases) {
    const std::string file = write("bad.yaml", text);
    const auto r = run_mlai_train("--config " + file + " --print-config");
    EXPECT_EQ(r.code, 2) << text << r.out;
    EXPECT_EQ(count_lines(r.out), 1) << text << r.out;
    EXPECT_NE(r.out.find(file), std::string::npos) << text << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << text << r.out;
  }
  const auto missing = run_mlai_train("--config " + dir_ + "/none.yaml");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.out.find("--config"), std::string::npos) << missing.out;
  EXPECT_NE(missing.out.find("none.yaml"), std::string::npos) << missing.out;
  // A bad value from a file is refused as the flag's would be.
  const auto bad_value = run_mlai_train("--config " + write("v.yaml", "epochs: 0\n"));
  EXPECT_EQ(bad_value.code, 2);
  EXPECT_NE(bad_value.out.find("--epochs"), std::string::npos) << bad_value.out;
  // ... and names the file and the key, for values CLI11 cannot convert and for values mlai
  // refuses; the same value on the command line is the flag's error alone.
  for (const auto& [text, key] : std::vector<std::pair<std::string, std::string>>{
           {"epochs: 0\n", "epochs"},
           {"batch-size: abc\n", "batch-size"},
           {"optimizer: foo\n", "optimizer"},
           {"lr: 0.1\nepochs: 1.5\n", "epochs"}}) {
    const std::string file = write("v.yaml", text);
    const auto r = run_mlai_train("--config " + file + " --print-config");
    EXPECT_EQ(r.code, 2) << text << r.out;
    EXPECT_EQ(count_lines(r.out), 1) << text << r.out;
    EXPECT_NE(r.out.find("--config " + file + ": key '" + key + "'"), std::string::npos)
        << text << r.out;
  }
  const auto on_line =
      run_mlai_train("--config " + write("v.yaml", "lr: 0.1\n") + " --batch-size abc --print-config");
  EXPECT_EQ(on_line.code, 2) << on_line.out;
  EXPECT_EQ(on_line.out.find("v.yaml"), std::string::npos) << on_line.out;
  EXPECT_NE(on_line.out.find("--batch-size"), std::string::npos) << on_line.out;
}

TEST_F(ConfigFileTest, ARunsSavedConfigRunsItAgain) {
  mlai::testing::make_synthetic_mnist(dir_ + "/data", 320, 64);
  const std::string logs = dir_ + "/logs";
  const auto first = run_mlai_train(
      "--dataset mnist --data-dir " + dir_ + "/data --log-dir " + logs +
      " --epochs 2 --batch-size 16 --limit-train-batches 6 --hidden 32 --optimizer sgd "
      "--lr 0.05 --seed 3 --device cpu --workers 0 --no-progress");
  ASSERT_EQ(first.code, 0) << first.out;
  const std::string saved = logs + "/default/version_0/config.yaml";
  ASSERT_TRUE(fs::exists(saved)) << first.out;
  const auto second = run_mlai_train("--config " + saved);
  ASSERT_EQ(second.code, 0) << second.out;
  EXPECT_EQ(read(logs + "/default/version_1/config.yaml"), read(saved));
  // The same settings train the same model: the test lines agree to the last digit.
  const auto test_line = [](const std::string& out) {
    const size_t at = out.find("test loss:");
    return at == std::string::npos ? std::string("<none>")
                                   : out.substr(at, out.find('\n', at) - at);
  };
  EXPECT_NE(test_line(first.out), "<none>") << first.out;
  EXPECT_EQ(test_line(second.out), test_line(first.out));
}

}  // namespace
