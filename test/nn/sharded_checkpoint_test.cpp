// Sharded checkpoints on one process (nn/checkpoint_shards.h; the ranks' writes are in
// test/dist/sharded_checkpoint_test.cpp): a checkpoint file cut into shard files reads, loads,
// resumes and consolidates as the file itself; a broken directory names its problem; a
// directory is swapped into place whole, and best.h5 links a directory's files.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../run_program.h"
#include "io/h5file.h"
#include "nn/checkpoint.h"
#include "nn/checkpoint_shards.h"
#include "nn/trainer.h"
#include "trainer_fixture.h"

namespace mlai::nn {
namespace {

namespace fs = std::filesystem;

// A dataset's bytes, whatever its dtype.
template <class Reader>
std::vector<char> bytes_of(const Reader& r, const std::string& name) {
  const io::H5Reader::Info i = r.info(name);
  std::vector<char> out(static_cast<size_t>(i.numel()) * io::h5type_size(i.dtype));
  r.read(name, i.dtype, out.data(), i.numel());
  return out;
}

// A root attribute as text, whatever its kind.
std::string attr_text(const io::H5Reader& r, const std::string& key) {
  for (const auto& [k, kind] : r.list_attrs("/")) {
    if (k != key) continue;
    if (kind == io::H5Reader::AttrKind::kString) return r.get_attr_string("/", k);
    if (kind == io::H5Reader::AttrKind::kInt) return std::to_string(r.get_attr_int("/", k));
    return std::to_string(r.get_attr_double("/", k));
  }
  return "(none)";
}

// Cuts the checkpoint file `from` into `shards` shard files in the directory `to`, as ranks
// write them: dataset i in shard i % shards, the root attributes in shard 0. `step`: the
// global_step each shard records (a shard of another save when it differs).
void cut_into_shards(const std::string& from, const std::string& to, int shards,
                     const std::vector<int64_t>& step = {}) {
  const io::H5Reader f(from);
  fs::create_directories(to);
  const std::vector<std::string> names = f.list_datasets();
  for (int s = 0; s < shards; ++s) {
    io::H5Writer w(to + "/" + shard_file_name(s, shards));
    for (size_t i = 0; i < names.size(); ++i) {
      if (static_cast<int>(i % static_cast<size_t>(shards)) != s) continue;
      const io::H5Reader::Info info = f.info(names[i]);
      w.write(names[i], info.dtype, info.shape, bytes_of(f, names[i]).data());
    }
    if (s == 0)
      for (const auto& [k, kind] : f.list_attrs("/")) {
        if (kind == io::H5Reader::AttrKind::kString) w.set_attr("/", k, f.get_attr_string("/", k));
        if (kind == io::H5Reader::AttrKind::kInt) w.set_attr("/", k, f.get_attr_int("/", k));
        if (kind == io::H5Reader::AttrKind::kFloat) w.set_attr("/", k, f.get_attr_double("/", k));
      }
    w.set_attr("/", "shard", static_cast<int64_t>(s));
    w.set_attr("/", "shards", static_cast<int64_t>(shards));
    w.set_attr("/", "global_step", step.empty() ? f.get_attr_int("/", "global_step")
                                                : step[static_cast<size_t>(s)]);
    w.commit();
  }
}

class ShardedCheckpointTest : public TrainerTest {
 protected:
  // Adam with a weight average (model, current_model, optimizer: three kinds of groups) and
  // dropout (a generator), stopped after epoch 1 of 2.
  Config adam_ema() const {
    Config c = base();
    c.optimizer = "adam";
    c.lr = 0.002;
    c.ema_decay = 0.9;
    c.dropout = 0.1;
    c.lr_schedule = "constant";  // (the same rates however the run is split)
    return c;
  }
  std::string stopped_run(const Config& c, const std::string& name) const {
    Config first = c;
    first.experiment_name = name;
    first.epochs = 1;
    return Trainer(first).fit().version_dir + "/checkpoints/last.h5";
  }
};

// A checkpoint file cut into three shards reads as the file: the same datasets, byte for
// byte, loaded into a model as the file loads; it consolidates into the file's datasets and
// attributes; a run resumed from it ends with the weights of a run resumed from the file.
TEST_F(ShardedCheckpointTest, ShardsReadLoadAndResumeAsTheFile) {
  const Config c = adam_ema();
  const std::string file = stopped_run(c, "full");
  const std::string dir = root + "/cut/last.h5";
  cut_into_shards(file, dir, 3);

  const io::H5Reader f(file);
  const CheckpointReader d(dir);
  EXPECT_TRUE(d.sharded());
  EXPECT_EQ(d.shards(), 3);
  ASSERT_EQ(d.list_datasets(), f.list_datasets());
  int compared = 0;
  for (const std::string& name : f.list_datasets()) {
    EXPECT_EQ(bytes_of(d, name), bytes_of(f, name)) << name;
    ++compared;
  }
  EXPECT_GE(compared, 6 * 4);  // the mlp's six parameters: weights, two moments, current weights
  EXPECT_EQ(d.list("model"), f.list("model"));
  EXPECT_TRUE(d.has("optimizer"));
  EXPECT_FALSE(d.has("swa_average"));
  EXPECT_EQ(d.get_attr_int("/", "global_step"), f.get_attr_int("/", "global_step"));

  // Consolidated: one file with the same datasets and root attributes (less the shards').
  const std::string one = root + "/one.h5";
  EXPECT_EQ(consolidate_checkpoint(dir, one), compared);
  const io::H5Reader o(one);
  ASSERT_EQ(o.list_datasets(), f.list_datasets());
  for (const std::string& name : f.list_datasets()) EXPECT_EQ(bytes_of(o, name), bytes_of(f, name)) << name;
  std::vector<std::string> keys_f, keys_o;
  for (const auto& [k, kind] : f.list_attrs("/")) keys_f.push_back(k);
  for (const auto& [k, kind] : o.list_attrs("/")) keys_o.push_back(k);
  EXPECT_EQ(keys_o, keys_f);
  for (const std::string& k : keys_f) EXPECT_EQ(attr_text(o, k), attr_text(f, k)) << k;

  // Loaded into a model, and resumed.
  Config from_file = c, from_dir = c;
  from_file.resume = file;
  from_file.experiment_name = "resumed-file";
  from_dir.resume = dir;
  from_dir.experiment_name = "resumed-dir";
  Trainer a(from_file), b(from_dir);
  a.fit();
  b.fit();
  EXPECT_EQ(weights(b), weights(a));
  Config straight = c;
  straight.experiment_name = "straight";
  Trainer s(straight);
  s.fit();
  EXPECT_EQ(weights(b), weights(s));
}

// --strategy zero3 on one process (nothing to shard over) with --state-dict-type sharded: the
// checkpoints are directories of one shard (best.h5 hard links to the top one's), and they
// resume exactly under either type. A requeued Slurm job (the same version directory) that
// changes the type swaps a file in for a directory and back.
TEST_F(ShardedCheckpointTest, OneProcessWritesOneShardAndResumesUnderEitherType) {
  Config c = adam_ema();
  c.strategy = "zero3";
  c.state_dict_type = "sharded";
  c.save_top_k = 2;
  c.val_split = 0.2;
  Config straight = c;
  straight.experiment_name = "straight";
  Trainer s(straight);
  s.fit();
  setenv("SLURM_JOB_ID", "4242", 1);  // (every run below writes version_4242)
  unsetenv("SLURM_STEP_ID");
  for (const char* type : {"full", "sharded"}) {
    SCOPED_TRACE(type);
    const std::string dir = stopped_run(c, "requeued");
    ASSERT_TRUE(fs::is_directory(dir));
    EXPECT_EQ(CheckpointReader(dir).shards(), 1);
    const fs::path ckpts = fs::path(dir).parent_path();
    if (std::string(type) == "full") {  // (the first run in the directory)
      std::vector<std::string> names;
      for (const auto& e : fs::directory_iterator(ckpts)) {
        names.push_back(e.path().filename().string());
        EXPECT_TRUE(e.is_directory()) << names.back();
      }
      std::sort(names.begin(), names.end());
      ASSERT_EQ(names.size(), 3u);  // nothing half-written left beside them
      EXPECT_EQ(names[0], "best.h5");
      EXPECT_EQ(names[1].rfind("epoch=1-", 0), 0u) << names[1];
      EXPECT_EQ(names[2], "last.h5");
      struct stat x {}, y {};
      ASSERT_EQ(stat((ckpts / names[1] / shard_file_name(0, 1)).c_str(), &x), 0);
      ASSERT_EQ(stat((ckpts / "best.h5" / shard_file_name(0, 1)).c_str(), &y), 0);
      EXPECT_EQ(x.st_ino, y.st_ino);
    }
    Config r = c;
    r.experiment_name = "requeued";
    r.resume = dir;
    r.strategy = std::string(type) == "full" ? "ddp" : "zero3";
    r.state_dict_type = type;
    Trainer t(r);
    t.fit();
    EXPECT_EQ(weights(t), weights(s));
    EXPECT_EQ(fs::is_directory(dir), std::string(type) == "sharded");
    EXPECT_EQ(CheckpointReader(dir).get_attr_int("/", "epoch"), 2);
    EXPECT_FALSE(fs::exists(dir + ".tmp"));
    EXPECT_FALSE(fs::exists(dir + ".full"));
  }
  unsetenv("SLURM_JOB_ID");
}

// A directory that is not a whole sharded checkpoint: one line naming the path and what is
// wrong, before anything is loaded.
TEST_F(ShardedCheckpointTest, BrokenDirectoriesNameTheirProblem) {
  const std::string file = stopped_run(base(), "full");
  auto error_of = [](const std::string& path) {
    try {
      CheckpointReader r(path);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string missing = root + "/missing";
  cut_into_shards(file, missing, 3);
  fs::remove(missing + "/" + shard_file_name(1, 3));
  EXPECT_NE(error_of(missing).find("without " + shard_file_name(1, 3)), std::string::npos)
      << error_of(missing);

  const std::string mixed = root + "/mixed";
  cut_into_shards(file, mixed, 2, {10, 11});
  EXPECT_NE(error_of(mixed).find("of the same save"), std::string::npos) << error_of(mixed);

  const std::string counts = root + "/counts";
  cut_into_shards(file, counts, 2);
  cut_into_shards(file, root + "/three", 3);
  fs::copy_file(root + "/three/" + shard_file_name(2, 3), counts + "/" + shard_file_name(2, 3));
  EXPECT_NE(error_of(counts).find("two different saves"), std::string::npos) << error_of(counts);

  const std::string twice = root + "/twice";
  cut_into_shards(file, twice, 1);
  {
    const io::H5Reader f(file);
    io::H5Writer w(twice + "/" + shard_file_name(0, 2));
    const std::string name = f.list_datasets("model").front();
    const io::H5Reader::Info i = f.info(name);
    w.write(name, i.dtype, i.shape, bytes_of(f, name).data());
    w.commit();
  }
  fs::rename(twice + "/" + shard_file_name(0, 1), twice + "/" + shard_file_name(1, 2));
  EXPECT_NE(error_of(twice).find("not shard"), std::string::npos) << error_of(twice);

  const std::string empty = root + "/empty";
  fs::create_directories(empty);
  std::ofstream(empty + "/notes.txt") << "x";
  EXPECT_NE(error_of(empty).find("without checkpoint shards"), std::string::npos) << error_of(empty);
  EXPECT_FALSE(checkpoint_exists(root + "/nothing"));
}

// The same dataset in two shards is refused (it would be read from either).
TEST_F(ShardedCheckpointTest, ADatasetInTwoShardsIsRefused) {
  const std::string file = stopped_run(base(), "full");
  const std::string dir = root + "/dup";
  cut_into_shards(file, dir, 2);
  {
    const io::H5Reader f(file);
    const std::string shard1 = dir + "/" + shard_file_name(1, 2);
    fs::rename(shard1, root + "/shard1.h5");
    const io::H5Reader old(root + "/shard1.h5");
    io::H5Writer w(shard1);
    for (const std::string& name : f.list_datasets()) {  // every dataset, shard 0's too
      const io::H5Reader::Info i = f.info(name);
      w.write(name, i.dtype, i.shape, bytes_of(f, name).data());
    }
    w.set_attr("/", "shard", int64_t{1});
    w.set_attr("/", "shards", int64_t{2});
    w.set_attr("/", "global_step", f.get_attr_int("/", "global_step"));
    w.commit();
  }
  try {
    CheckpointReader r(dir);
    FAIL() << "read a dataset stored twice";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("is in two shards"), std::string::npos) << e.what();
  }
}

// replace_path swaps whole checkpoints: a directory for a directory, a file for a directory
// and back, onto nothing; what it replaced is gone. A swap cut short between two renames
// (no atomic exchange) leaves PATH.old, which is read in its place.
TEST_F(ShardedCheckpointTest, ReplacePathSwapsWholeCheckpoints) {
  const std::string at = root + "/ckpt/last.h5";
  fs::create_directories(root + "/ckpt");
  auto make_dir = [&](const std::string& p, const std::string& content) {
    fs::create_directories(p);
    std::ofstream(p + "/" + shard_file_name(0, 1)) << content;
  };
  auto content = [](const std::string& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
  };
  make_dir(at + ".tmp", "one");
  replace_path(at + ".tmp", at);  // onto nothing
  EXPECT_EQ(content(at + "/" + shard_file_name(0, 1)), "one");
  make_dir(at + ".tmp", "two");
  replace_path(at + ".tmp", at);  // a directory for a directory
  EXPECT_EQ(content(at + "/" + shard_file_name(0, 1)), "two");
  EXPECT_FALSE(fs::exists(at + ".tmp"));
  std::ofstream(at + ".file") << "three";
  replace_path(at + ".file", at);  // a file for a directory
  EXPECT_TRUE(fs::is_regular_file(at));
  EXPECT_EQ(content(at), "three");
  EXPECT_FALSE(fs::exists(at + ".file"));
  make_dir(at + ".tmp", "four");
  replace_path(at + ".tmp", at);  // a directory for a file
  EXPECT_EQ(content(at + "/" + shard_file_name(0, 1)), "four");
  EXPECT_EQ(fs::directory_iterator(root + "/ckpt")->path().filename(), "last.h5");

  fs::rename(at, at + ".old");  // the fallback swap, cut short
  EXPECT_EQ(checkpoint_path(at), at + ".old");
  EXPECT_TRUE(checkpoint_exists(at));

  make_dir(root + "/top", "five");
  link_checkpoint(root + "/top", root + "/best.h5");
  struct stat x {}, y {};
  ASSERT_EQ(stat((root + "/top/" + shard_file_name(0, 1)).c_str(), &x), 0);
  ASSERT_EQ(stat((root + "/best.h5/" + shard_file_name(0, 1)).c_str(), &y), 0);
  EXPECT_EQ(x.st_ino, y.st_ino);
}

// The programs take a sharded checkpoint's directory: mlai_predict predicts as from the file,
// mlai_convert --checkpoint makes the file; its flag errors are one line with code 2.
TEST_F(ShardedCheckpointTest, ProgramsReadDirectories) {
  const std::string file = stopped_run(base(), "full");
  const std::string dir = root + "/cut.h5";
  cut_into_shards(file, dir, 2);
  const std::string images = root + "/data/t10k-images-idx3-ubyte";  // (synthetic_data.h)
  const auto a = testing::run_program(
      "mlai_predict", "--checkpoint " + file + " --input " + images + " --output " + root + "/a.csv");
  const auto b = testing::run_program(
      "mlai_predict", "--checkpoint " + dir + " --input " + images + " --output " + root + "/b.csv");
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  auto text = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_GT(text(root + "/a.csv").size(), 100u);
  EXPECT_EQ(text(root + "/b.csv"), text(root + "/a.csv"));

  const auto c = testing::run_program("mlai_convert", "--checkpoint " + dir + " --out " + root + "/c.h5");
  ASSERT_EQ(c.code, 0) << c.out;
  EXPECT_NE(c.out.find("tensors of " + dir), std::string::npos) << c.out;
  const io::H5Reader f(file), one(root + "/c.h5");
  EXPECT_EQ(one.list_datasets(), f.list_datasets());
  EXPECT_EQ(one.get_attr_string("/", "format"), "mlai-checkpoint-1");
  for (const std::string& args : {"--checkpoint " + dir + " --out " + root + "/c",
                                  "--checkpoint " + dir + " --from mnist --out x.h5",
                                  "--checkpoint " + root + "/none --out x.h5"}) {
    const auto e = testing::run_program("mlai_convert", args);
    EXPECT_EQ(e.code, 2) << args << "\n" << e.out;
    EXPECT_EQ(testing::count_lines(e.out), 1) << args << "\n" << e.out;
  }
}

}  // namespace
}  // namespace mlai::nn
