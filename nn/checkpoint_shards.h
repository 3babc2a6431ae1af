// Sharded checkpoints (--state-dict-type sharded, Lightning's FSDPStrategy(state_dict_type=
// "sharded"); DeepSpeed's only kind). A full checkpoint is one HDF5 file, which rank 0 writes
// after gathering every rank's share of the state. A sharded one is a directory of the same
// name ("last.h5/", as Lightning's sharded "last.ckpt/"), in which each rank of the group that
// owns the state writes what it owns, all at once and without gathering:
//
//   last.h5/shard-00000-of-00004.h5   rank 0: its parameters, their optimizer state and weight
//                                      averages, and everything kept whole (buffers, generators,
//                                      the loss scaler) and the root attributes (epoch, config...)
//   last.h5/shard-00001-of-00004.h5   rank 1: its parameters and their state, ...
//
// ZeRO shards by whole tensors (nn/zero.h), so every tensor is in exactly one file, whole, under
// the name it has in a full checkpoint. A reader (CheckpointReader) opens a file or a directory
// alike, so resuming (on any number of ranks, under any strategy), --test-ckpt, --pretrained and
// mlai_predict take either; each rank reads the tensors it needs from whichever files hold them.
// consolidate_checkpoint makes the one file (mlai_convert --checkpoint).
//
// A directory is written as NAME.tmp and swapped into place whole once every shard is committed
// (replace_path), so a crash leaves the previous checkpoint or the new one, never a mix.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/h5file.h"

namespace mlai::nn {

// "shard-00001-of-00004.h5"
std::string shard_file_name(int shard, int shards);

// What one rank writes of a sharded checkpoint (save_checkpoint's `shard`): its index among
// `shards`, and which tensors, by their full names ("model/fc.weight", "optimizer/fc.weight.
// momentum", ...). Shard 0 writes the root attributes as well.
struct CheckpointShard {
  int index = 0;
  int shards = 1;
  std::function<bool(const std::string&)> keep;
};

// A checkpoint opened for reading: one HDF5 file, or the directory of a sharded one, whose
// datasets are the union of its files' (each in one file only; root attributes from shard 0).
// Throws, naming the path, when a shard is missing, duplicated or from another save.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  int shards() const { return static_cast<int>(files_.size()); }
  bool sharded() const { return sharded_; }
  bool has(const std::string& name) const;  // a dataset, or a group holding some
  // Names of the direct children of a group, sorted.
  std::vector<std::string> list(const std::string& group) const;
  // Paths of every dataset, sorted.
  std::vector<std::string> list_datasets() const;
  io::H5Reader::Info info(const std::string& name) const;
  void read(const std::string& name, io::H5Type dtype, void* out, int64_t expected_numel) const;
  // Root attributes ("/"; of shard 0 in a sharded checkpoint).
  const io::H5Reader& root() const { return *files_.front(); }
  bool has_attr(const std::string& object, const std::string& key) const {
    return root().has_attr(object, key);
  }
  std::string get_attr_string(const std::string& object, const std::string& key) const {
    return root().get_attr_string(object, key);
  }
  int64_t get_attr_int(const std::string& object, const std::string& key) const {
    return root().get_attr_int(object, key);
  }
  double get_attr_double(const std::string& object, const std::string& key) const {
    return root().get_attr_double(object, key);
  }
  const std::string& path() const { return path_; }

 private:
  const io::H5Reader& file_of(const std::string& name) const;

  std::string path_;
  bool sharded_ = false;
  std::vector<std::unique_ptr<io::H5Reader>> files_;
  std::map<std::string, size_t> where_;  // sharded: dataset path -> file
};

// The path a checkpoint is read from: `path` itself, or, when a swap (replace_path) was cut
// short between its two renames on a file system without an atomic exchange, the complete
// previous checkpoint it left at PATH.old. "" when neither exists.
std::string checkpoint_path(const std::string& path);
bool checkpoint_exists(const std::string& path);

// Puts the finished `tmp` (a file or a directory) at `target`, replacing whatever is there:
// one atomic exchange of the two names (renameat2's RENAME_EXCHANGE), then the old one
// deleted. Where the file system cannot exchange (some parallel file systems), the old one is
// first renamed to TARGET.old (which checkpoint_path falls back to) and deleted last.
void replace_path(const std::string& tmp, const std::string& target);

// `to` as a second name of the checkpoint `from` (best.h5 for a top-k file): hard links of
// its file(s), copies where the file system has none, swapped in with replace_path.
void link_checkpoint(const std::string& from, const std::string& to);

// Writes a sharded checkpoint (or a file) as one checkpoint file at `out`: every tensor and
// root attribute, in the layout mlai_train writes under --state-dict-type full. Written under
// a temporary name and renamed. Returns the number of tensors.
int64_t consolidate_checkpoint(const std::string& in, const std::string& out);

}  // namespace mlai::nn
