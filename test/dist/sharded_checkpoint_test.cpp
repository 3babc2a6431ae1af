// Sharded checkpoints (--state-dict-type sharded) under mpirun on the CPU: at 2 ranks (zero3
// over both) and at 4 (hybrid sharding, two groups of two: rank 0's group writes). Each rank
// of the group writes the tensors it owns, and nothing else; the directory reads as the full
// file an identical run writes, tensor for tensor and byte for byte; it resumes under zero3,
// zero1 and DDP to the uninterrupted run's weights, and is replaced whole by the next save.
// Written asynchronously (--async-checkpoint), it holds the same bytes; with
// --save-weights-only, the same weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "ddp_fixture.h"
#include "io/h5file.h"
#include "nn/checkpoint_shards.h"
#include "nn/trainer.h"

namespace mlai::dist {
namespace {

class ShardedCheckpoint : public Ddp {
 protected:
  bool runs_at(int world) const override { return world == 2 || world == 4; }
  // What the sums may differ by from DDP's: nothing at 2 ranks; float32 rounding at 4.
  static double tolerance() { return group().world() == 2 ? 0.0 : 1e-3; }
  nn::Config cfg(const std::string& strategy, const std::string& type,
                 const std::string& logs) const {
    nn::Config c = config(16);
    c.strategy = strategy;
    c.shard_size = strategy == "ddp" ? "auto" : "2";  // (the world at 2 ranks; hybrid at 4)
    c.state_dict_type = type;
    c.hidden = {48, 24};  // six parameters to share out
    c.optimizer = "adam";
    c.lr = 0.003;
    c.precision = "bf16";
    c.ema_decay = 0.9;
    c.dropout = 0.1;  // (generators: kept whole, in shard 0)
    c.log_dir = root + "/" + logs;
    return c;
  }
};

template <class Reader>
std::vector<char> bytes_of(const Reader& r, const std::string& name) {
  const io::H5Reader::Info i = r.info(name);
  std::vector<char> out(static_cast<size_t>(i.numel()) * io::h5type_size(i.dtype));
  r.read(name, i.dtype, out.data(), i.numel());
  return out;
}

TEST_F(ShardedCheckpoint, EachOwnerWritesItsShareAndTheWholeIsTheFullFile) {
  nn::Trainer straight(cfg("ddp", "full", "logs-straight"), "", group());
  const int64_t steps = straight.fit().global_step;
  const std::vector<double> want = flat_weights(straight);

  auto stopped = [&](const std::string& type, bool async, bool weights_only = false) {
    const std::string logs =
        "logs-stopped-" + type + (async ? "-async" : "") + (weights_only ? "-weights" : "");
    nn::Config c = cfg("zero3", type, logs);
    c.max_steps = 4;
    c.checkpoint_every_n_steps = 1;  // (--async-checkpoint: each save waits for the last)
    c.async_checkpoint = async;
    c.save_weights_only = weights_only;
    nn::Trainer(c, "", group()).fit();
    return under_rank0_root(logs + "/default/version_0/checkpoints/last.h5");
  };
  const std::string full = stopped("full", false), sharded = stopped("sharded", false);
  const std::string async = stopped("sharded", true);
  const std::string weights_full = stopped("full", false, true);
  const std::string weights_sharded = stopped("sharded", false, true);
  if (group().rank() == 0) {
    // --save-weights-only: the full file's tensors less the optimizer's and the EMA's training
    // weights (a full one gathers the masters alone; a sharded one writes the owner's).
    const io::H5Reader f(full);
    std::vector<std::string> kept;
    for (const std::string& name : f.list_datasets())
      if (name.rfind("optimizer/", 0) != 0 && name.rfind("current_model/", 0) != 0)
        kept.push_back(name);
    for (const std::string& path : {weights_full, weights_sharded}) {
      SCOPED_TRACE(path);
      const nn::CheckpointReader w(path);
      ASSERT_EQ(w.list_datasets(), kept);
      for (const std::string& name : kept) EXPECT_EQ(bytes_of(w, name), bytes_of(f, name)) << name;
    }
  }
  if (group().rank() == 0) {
    // Written on each rank's thread while training went on, put in place by rank 0.
    const io::H5Reader f(full);
    const nn::CheckpointReader a(async);
    EXPECT_EQ(a.shards(), 2);
    ASSERT_EQ(a.list_datasets(), f.list_datasets());
    for (const std::string& name : f.list_datasets())
      EXPECT_EQ(bytes_of(a, name), bytes_of(f, name)) << name;
    EXPECT_FALSE(fs::exists(async + ".tmp"));
  }
  if (group().rank() == 0) {
    ASSERT_TRUE(fs::is_directory(sharded));
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(sharded)) files.push_back(e.path().filename());
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files, (std::vector<std::string>{nn::shard_file_name(0, 2), nn::shard_file_name(1, 2)}));
    EXPECT_FALSE(fs::exists(sharded + ".tmp"));
    // Every tensor of the full file, byte for byte, each in one shard.
    const io::H5Reader f(full);
    const nn::CheckpointReader d(sharded);
    ASSERT_EQ(d.list_datasets(), f.list_datasets());
    for (const std::string& name : f.list_datasets())
      EXPECT_EQ(bytes_of(d, name), bytes_of(f, name)) << name;
    for (const char* key : {"epoch", "next_batch", "global_step", "optimizer_steps", "ema_updates",
                            "epoch_samples", "world_size"})
      EXPECT_EQ(d.get_attr_int("/", key), f.get_attr_int("/", key)) << key;
    // Shard 1 holds its own parameters' tensors and nothing kept whole; both hold some.
    const io::H5Reader s0(sharded + "/" + nn::shard_file_name(0, 2));
    const io::H5Reader s1(sharded + "/" + nn::shard_file_name(1, 2));
    EXPECT_FALSE(s0.list_datasets("model").empty());
    ASSERT_TRUE(s1.has("model"));
    for (const std::string& name : s1.list_datasets()) {
      EXPECT_TRUE(name.rfind("model/", 0) == 0 || name.rfind("optimizer/", 0) == 0 ||
                  name.rfind("current_model/", 0) == 0)
          << name;
      if (name.rfind("model/", 0) == 0) {  // its optimizer state beside it
        EXPECT_TRUE(s1.has("optimizer/" + name.substr(6) + ".exp_avg")) << name;
        EXPECT_TRUE(s1.has("current_model/" + name.substr(6))) << name;
      }
    }
    EXPECT_FALSE(s1.has_attr("/", "config"));
    EXPECT_TRUE(s0.has("rng"));
  }
  // Resumed from the directory under three strategies, the last two writing files.
  for (const auto& [strategy, type] : std::vector<std::pair<std::string, std::string>>{
           {"zero3", "sharded"}, {"zero1", "full"}, {"ddp", "full"}}) {
    SCOPED_TRACE(strategy);
    nn::Config c = cfg(strategy, type, "logs-resumed-" + strategy);
    c.resume = sharded;
    c.checkpoint_every = 1;  // last.h5 at both epochs' ends: the second replaces the first
    nn::Trainer t(c, "", group());
    EXPECT_EQ(t.fit().global_step, steps);
    EXPECT_LE(max_rel_diff(flat_weights(t), want), tolerance());
    const std::string last =
        under_rank0_root("logs-resumed-" + strategy + "/default/version_0/checkpoints/last.h5");
    if (group().rank() == 0) {
      EXPECT_EQ(fs::is_directory(last), type == "sharded");
      EXPECT_EQ(nn::CheckpointReader(last).get_attr_int("/", "global_step"), steps);
      EXPECT_FALSE(fs::exists(last + ".tmp"));
    }
  }
}

}  // namespace
}  // namespace mlai::dist
