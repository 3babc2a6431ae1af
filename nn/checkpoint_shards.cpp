// Sharded checkpoints (see checkpoint_shards.h).
#include "nn/checkpoint_shards.h"

#include <fcntl.h>  // AT_FDCWD
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>

namespace fs = std::filesystem;

namespace mlai::nn {

namespace {

// shard and count from "shard-00001-of-00004.h5"; false for any other name (a temporary
// file of a write in progress among them).
bool parse_shard_name(const std::string& name, int* shard, int* shards) {
  if (name.size() != std::strlen("shard-00000-of-00000.h5") || name.rfind("shard-", 0) != 0 ||
      name.compare(11, 4, "-of-") != 0 || !name.ends_with(".h5"))
    return false;
  const std::string a = name.substr(6, 5), b = name.substr(15, 5);
  if (a.find_first_not_of("0123456789") != std::string::npos ||
      b.find_first_not_of("0123456789") != std::string::npos)
    return false;
  *shard = std::stoi(a);
  *shards = std::stoi(b);
  return *shards > 0 && *shard < *shards;
}

}  // namespace

std::string shard_file_name(int shard, int shards) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "shard-%05d-of-%05d.h5", shard, shards);
  return buf;
}

std::string checkpoint_path(const std::string& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return path;
  if (fs::exists(path + ".old", ec)) return path + ".old";
  return "";
}

bool checkpoint_exists(const std::string& path) { return !checkpoint_path(path).empty(); }

CheckpointReader::CheckpointReader(const std::string& path) : path_(path) {
  const std::string at = checkpoint_path(path);
  std::error_code ec;
  if (at.empty() || !fs::is_directory(at, ec)) {
    files_.push_back(std::make_unique<io::H5Reader>(at.empty() ? path : at));
    return;
  }
  sharded_ = true;
  int count = -1;
  std::map<int, std::string> found;
  for (const auto& e : fs::directory_iterator(at)) {
    int shard = 0, shards = 0;
    if (!parse_shard_name(e.path().filename().string(), &shard, &shards)) continue;
    if (count >= 0 && shards != count)
      throw std::runtime_error(path + ": shards of two different saves (" + shard_file_name(0, count) +
                               " and " + e.path().filename().string() + ")");
    count = shards;
    found[shard] = e.path().string();
  }
  if (count < 0)
    throw std::runtime_error(path + ": a directory without checkpoint shards (shard-00000-of-N.h5); "
                             "not an mlai checkpoint");
  for (int s = 0; s < count; ++s) {
    if (!found.count(s))
      throw std::runtime_error(path + ": sharded checkpoint without " + shard_file_name(s, count) +
                               " (incomplete copy?)");
    files_.push_back(std::make_unique<io::H5Reader>(found[s]));
  }
  const int64_t step = files_[0]->has_attr("/", "global_step") ? files_[0]->get_attr_int("/", "global_step") : -1;
  for (size_t s = 0; s < files_.size(); ++s) {
    const io::H5Reader& f = *files_[s];
    if (!f.has_attr("/", "shard") || f.get_attr_int("/", "shard") != static_cast<int64_t>(s) ||
        f.get_attr_int("/", "shards") != count ||
        (f.has_attr("/", "global_step") ? f.get_attr_int("/", "global_step") : -1) != step)
      throw std::runtime_error(f.path() + ": not shard " + std::to_string(s) + " of " +
                               std::to_string(count) + " of the same save as " + files_[0]->path());
    for (const std::string& d : f.list_datasets()) {
      if (!where_.emplace(d, s).second)
        throw std::runtime_error(path + ": " + d + " is in two shards (" +
                                 files_[where_[d]]->path() + " and " + f.path() + ")");
    }
  }
}

CheckpointReader::~CheckpointReader() = default;

const io::H5Reader& CheckpointReader::file_of(const std::string& name) const {
  if (!sharded_) return *files_.front();
  const auto it = where_.find(name);
  if (it == where_.end())
    throw std::runtime_error("cannot read dataset '" + name + "' from " + path_ +
                             ": no such dataset in any shard");
  return *files_[it->second];
}

bool CheckpointReader::has(const std::string& name) const {
  if (!sharded_) return files_.front()->has(name);
  if (name.empty() || name == "/" || where_.count(name)) return true;
  const auto it = where_.lower_bound(name + "/");
  return it != where_.end() && it->first.rfind(name + "/", 0) == 0;
}

std::vector<std::string> CheckpointReader::list(const std::string& group) const {
  if (!sharded_) return files_.front()->list(group);
  const std::string prefix = group.empty() || group == "/" ? "" : group + "/";
  std::set<std::string> names;
  for (auto it = where_.lower_bound(prefix); it != where_.end() && it->first.rfind(prefix, 0) == 0; ++it)
    names.insert(it->first.substr(prefix.size(), it->first.find('/', prefix.size()) - prefix.size()));
  if (names.empty() && !prefix.empty())
    throw std::runtime_error("cannot list " + path_ + ": no group '" + group + "'");
  return {names.begin(), names.end()};
}

std::vector<std::string> CheckpointReader::list_datasets() const {
  if (!sharded_) return files_.front()->list_datasets();
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

io::H5Reader::Info CheckpointReader::info(const std::string& name) const {
  return file_of(name).info(name);
}

void CheckpointReader::read(const std::string& name, io::H5Type dtype, void* out,
                            int64_t expected_numel) const {
  file_of(name).read(name, dtype, out, expected_numel);
}

void replace_path(const std::string& tmp, const std::string& target) {
  std::error_code ec;
  if (!fs::exists(target, ec) && !fs::is_symlink(target, ec)) {
    fs::rename(tmp, target);
    return;
  }
  if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp);  // (the old checkpoint, now under the temporary name)
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    throw std::runtime_error("cannot put " + tmp + " in place of " + target + ": " +
                             std::strerror(errno));
  // No exchange here: move the old one aside first (checkpoint_path reads it until the new
  // one is in place), then the new one in, then delete the old one.
  const std::string old = target + ".old";
  fs::remove_all(old);
  fs::rename(target, old);
  fs::rename(tmp, target);
  fs::remove_all(old);
}

void link_checkpoint(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp";
  fs::remove_all(tmp);
  auto link = [](const fs::path& a, const fs::path& b) {
    std::error_code ec;
    fs::create_hard_link(a, b, ec);
    if (ec) fs::copy_file(a, b, fs::copy_options::overwrite_existing);
  };
  if (fs::is_directory(from)) {
    fs::create_directory(tmp);
    for (const auto& e : fs::directory_iterator(from))
      if (e.is_regular_file()) link(e.path(), fs::path(tmp) / e.path().filename());
  } else {
    link(from, tmp);
  }
  replace_path(tmp, to);
}

int64_t consolidate_checkpoint(const std::string& in, const std::string& out) {
  const CheckpointReader r(in);
  io::H5Writer w(out);
  int64_t n = 0;
  std::vector<char> buf;
  for (const std::string& name : r.list_datasets()) {
    const io::H5Reader::Info i = r.info(name);
    buf.resize(static_cast<size_t>(i.numel()) * io::h5type_size(i.dtype));
    r.read(name, i.dtype, buf.data(), i.numel());
    w.write(name, i.dtype, i.shape, buf.data());
    ++n;
  }
  for (const auto& [key, kind] : r.root().list_attrs("/")) {
    if (key == "shard" || key == "shards") continue;
    switch (kind) {
      case io::H5Reader::AttrKind::kString: w.set_attr("/", key, r.get_attr_string("/", key)); break;
      case io::H5Reader::AttrKind::kInt: w.set_attr("/", key, r.get_attr_int("/", key)); break;
      case io::H5Reader::AttrKind::kFloat: w.set_attr("/", key, r.get_attr_double("/", key)); break;
      case io::H5Reader::AttrKind::kOther:
        throw std::runtime_error(in + ": root attribute '" + key + "' is not a single value");
    }
  }
  w.set_attr("/", "format", "mlai-checkpoint-1");
  w.commit();
  return n;
}

}  // namespace mlai::nn
