// --async-checkpoint (Lightning's AsyncCheckpointIO) on one process: a save copies the
// checkpoint to host memory and a thread writes it while training goes on. The file holds the
// state of the step it was taken at, even when the write starts steps later; it resumes
// exactly; a sharded one is put in place whole with best.h5 linked; and a write that fails
// stops the run with the file's name.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/checkpoint_shards.h"
#include "nn/trainer.h"
#include "tensor/device.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

std::vector<float> floats(const CheckpointReader& r, const std::string& name) {
  std::vector<float> v(static_cast<size_t>(r.info(name).numel()));
  r.read(name, io::H5Type::kFloat32, v.data(), static_cast<int64_t>(v.size()));
  return v;
}

// Every float32 dataset of two checkpoints (files or directories), equal; how many compared.
int expect_same_tensors(const std::string& a, const std::string& b) {
  const CheckpointReader x(a), y(b);
  EXPECT_EQ(x.list_datasets(), y.list_datasets());
  int n = 0;
  for (const std::string& name : x.list_datasets()) {
    if (x.info(name).dtype != io::H5Type::kFloat32) continue;
    EXPECT_EQ(floats(x, name), floats(y, name)) << name;
    ++n;
  }
  return n;
}

class AsyncCheckpointTest : public TrainerTest {
 protected:
  void TearDown() override {
    unsetenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS");
    unsetenv("SLURM_JOB_ID");
    TrainerTest::TearDown();
  }
  Config sgd() const {
    Config c = base();
    c.optimizer = "sgd";
    c.momentum = 0.9;
    c.dropout = 0.2;
    c.lr_schedule = "constant";
    c.checkpoint_every_n_steps = 5;
    return c;
  }
};

// A run that dies at step 23 leaves last.h5 from step 20. Written asynchronously, with its
// write held back 300 ms (training runs on meanwhile), it holds the same tensors as the
// synchronous one, and resuming from it ends as a straight run does.
TEST_F(AsyncCheckpointTest, TheFileHoldsItsStepAndResumesExactly) {
  const Config c = sgd();
  Trainer straight(c);
  straight.fit();

  Config sync = c;
  sync.experiment_name = "sync";
  const std::string at_sync = crash_at(sync, 23);
  Config async = c;
  async.experiment_name = "async";
  async.async_checkpoint = true;
  setenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS", "300", 1);
  const std::string at_async = crash_at(async, 23);
  unsetenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS");
  ASSERT_FALSE(at_async.empty());
  EXPECT_GE(expect_same_tensors(at_async, at_sync), 6 * 2);  // weights and momenta
  EXPECT_EQ(CheckpointReader(at_async).get_attr_int("/", "global_step"), 20);

  Config again = async;
  again.resume = at_async;
  Trainer resumed(again);
  resumed.fit();
  EXPECT_EQ(weights(resumed), weights(straight));
}

// --state-dict-type sharded with --async-checkpoint (zero3 on one process): the directories
// are put in place whole once written, best.h5 links the top one after it is in place, and
// every checkpoint holds what the synchronous run's does.
TEST_F(AsyncCheckpointTest, ShardedDirectoriesArePutInPlaceWhole) {
  Config c = sgd();
  c.strategy = "zero3";
  c.state_dict_type = "sharded";
  c.checkpoint_every_n_steps = 4;
  c.val_split = 0.2;
  c.save_top_k = 2;
  c.val_check_interval = "0.5";
  Config sync = c, async = c;
  sync.experiment_name = "sync";
  async.experiment_name = "async";
  async.async_checkpoint = true;
  setenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS", "50", 1);
  const std::string a = Trainer(async).fit().version_dir + "/checkpoints";
  const std::string s = Trainer(sync).fit().version_dir + "/checkpoints";
  std::vector<std::string> names_a, names_s;
  for (const auto& e : fs::directory_iterator(a)) names_a.push_back(e.path().filename());
  for (const auto& e : fs::directory_iterator(s)) names_s.push_back(e.path().filename());
  std::sort(names_a.begin(), names_a.end());
  std::sort(names_s.begin(), names_s.end());
  EXPECT_EQ(names_a, names_s);  // (no .tmp left behind)
  EXPECT_EQ(names_a.size(), 4u) << "best.h5, two top-k, last.h5";
  for (const std::string& n : names_a) {
    SCOPED_TRACE(n);
    EXPECT_TRUE(fs::is_directory(a + "/" + n));
    EXPECT_GE(expect_same_tensors(a + "/" + n, s + "/" + n), 6 * 2);
  }
  int linked = 0;
  struct stat best {};
  ASSERT_EQ(stat((a + "/best.h5/" + shard_file_name(0, 1)).c_str(), &best), 0);
  for (const std::string& n : names_a) {
    struct stat x {};
    if (n != "best.h5" && stat((a + "/" + n + "/" + shard_file_name(0, 1)).c_str(), &x) == 0)
      linked += x.st_ino == best.st_ino;
  }
  EXPECT_EQ(linked, 1);
}

// On a GPU (gpu-check runs it): the image is copied from device memory at the save, so an
// fp16 zero3 run's asynchronous checkpoint, written 100 ms late, holds what the synchronous
// run's holds. (Full files: a sharded directory is put in place by the next save or the end
// of the run, so a crash in between leaves the one before.)
TEST_F(AsyncCheckpointTest, CudaImagesHoldTheirStep) {
  if (!tensor::cuda_available())
    GTEST_SKIP() << "no CUDA device: " << tensor::cuda_unavailable_reason();
  Config c = sgd();
  c.device = "cuda";
  c.precision = "16";
  c.optimizer = "adam";
  c.lr = 0.002;
  c.strategy = "zero3";
  c.checkpoint_every_n_steps = 4;
  Config sync = c, async = c;
  sync.experiment_name = "sync";
  async.experiment_name = "async";
  async.async_checkpoint = true;
  setenv("MLAI_ASYNC_CHECKPOINT_DELAY_MS", "100", 1);
  const std::string a = crash_at(async, 10), s = crash_at(sync, 10);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(CheckpointReader(a).get_attr_int("/", "global_step"), 8);
  EXPECT_GE(expect_same_tensors(a, s), 6 * 3);  // weights, two moments
}

// A write that fails on its thread stops the run at the next save, with the file's name (as a
// synchronous one does at once): here a directory squats on the writer's temporary name.
TEST_F(AsyncCheckpointTest, AFailedWriteStopsTheRunWithTheFilesName) {
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    Config c = sgd();
    c.async_checkpoint = async;
    c.experiment_name = async ? "async" : "sync";
    setenv("SLURM_JOB_ID", "77", 1);  // (the version directory known beforehand)
    const std::string ckpts = c.log_dir + "/" + c.experiment_name + "/version_77/checkpoints";
    fs::create_directories(ckpts + "/last.h5.tmp." + std::to_string(getpid()) + "/x");
    Trainer t(c);
    try {
      t.fit();
      ADD_FAILURE() << "the run ended without its checkpoint";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(ckpts + "/last.h5"), std::string::npos) << e.what();
    }
    unsetenv("SLURM_JOB_ID");
  }
}

}  // namespace
}  // namespace mlai::nn
