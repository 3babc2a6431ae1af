// HDF5 checkpoints (see checkpoint.h).
#include "nn/checkpoint.h"

#include <cmath>
#include <set>
#include <sstream>
#include <stdexcept>

#include "io/h5file.h"
#include "nn/checkpoint_shards.h"

namespace mlai::nn {

namespace {
io::H5Type h5_type(DType dt) {
  switch (dt) {
    case DType::kFloat32: return io::H5Type::kFloat32;
    case DType::kFloat64: return io::H5Type::kFloat64;
    case DType::kInt64: return io::H5Type::kInt64;
    case DType::kInt32: return io::H5Type::kInt32;
    case DType::kUInt8: return io::H5Type::kUInt8;
    default:
      throw std::invalid_argument(std::string("checkpoint: cannot store ") +
                                  tensor::dtype_name(dt) + " tensors");
  }
}

template <class Writer>
void write_tensor(Writer& w, const std::string& name, const Tensor& t) {
  const Tensor host = t.to(Device::cpu());
  w.write(name, h5_type(host.dtype()), host.shape(), host.data_ptr());
}

void read_into(const CheckpointReader& r, const std::string& name, Tensor& t) {
  Tensor host = Tensor::empty(t.shape(), t.dtype());
  r.read(name, h5_type(t.dtype()), host.data_ptr(), host.numel());
  t.copy_from(host.to(t.device()));
}

}  // namespace

namespace {
// save_checkpoint's contents into `w`: an io::H5Writer, or a CheckpointImage (same calls).
template <class Writer>
void fill_checkpoint(Writer& w, Module& model, Optimizer* opt, const TrainState& st,
                     const Config& cfg, const NamedTensors& amp, const DataInfo* data,
                     const NamedTensors& current, const NamedTensors& swa,
                     const CheckpointShard* shard) {
  // A shard writes the tensors it keeps, and shard 0 the root attributes too.
  auto put = [&](const std::string& name, const Tensor& t) {
    if (!shard || shard->keep(name)) write_tensor(w, name, t);
  };
  for (auto& [n, t] : model.named_tensors()) put("model/" + n, *t);
  for (auto& [n, t] : current) put("current_model/" + n, *t);
  for (auto& [n, t] : swa) put("swa_average/" + n, *t);
  if (shard) {
    w.set_attr("/", "shard", static_cast<int64_t>(shard->index));
    w.set_attr("/", "shards", static_cast<int64_t>(shard->shards));
    w.set_attr("/", "global_step", st.global_step);  // (the reader checks all shards agree)
    w.set_attr("/", "format", "mlai-checkpoint-shard-1");
  }
  if (opt)
    for (auto& [n, t] : opt->state()) put("optimizer/" + n, *t);
  if (shard && shard->index != 0) return;
  w.set_attr("/", "ema_updates", st.ema_updates);
  w.set_attr("/", "swa",
             nlohmann::json{{"updates", st.swa_updates},
                            {"latest_epoch", st.swa_latest_epoch},
                            {"done", st.swa_done}}
                 .dump());
  for (auto& [n, t] : amp) put("amp/" + n, *t);
  if (opt) {
    w.set_attr("/", "optimizer_steps", opt->step_count());
    w.set_attr("/", "optimizer_lr", opt->lr());
    // Groups after the first (--unfreeze-backbone-at-epoch's backbone): rate, start, members.
    if (opt->group_count() > 1) {
      nlohmann::json groups = nlohmann::json::array();
      for (int g = 1; g < opt->group_count(); ++g)
        groups.push_back(
            {{"lr", opt->group_lr(g)}, {"start", opt->group_start(g)}, {"params", opt->group_names(g)}});
      w.set_attr("/", "optimizer_groups", groups.dump());
    }
  }
  for (auto& [n, g] : model.named_generators()) {
    const std::vector<int64_t> s{static_cast<int64_t>(g->seed()), static_cast<int64_t>(g->offset())};
    if (!shard || shard->keep("rng/" + n)) w.write("rng/" + n, io::H5Type::kInt64, {2}, s.data());
  }
  w.set_attr("/", "epoch", st.epoch);
  w.set_attr("/", "next_batch", st.next_batch);
  w.set_attr("/", "global_step", st.global_step);
  w.set_attr("/", "epoch_samples", st.epoch_samples);
  w.set_attr("/", "world_size", st.world);
  w.set_attr("/", "schedule_shift", st.schedule_shift);
  w.set_attr("/", "best_score", st.best_score);
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [score, file] : st.top_k) top.push_back({score, file});
  w.set_attr("/", "top_k", top.dump());
  w.set_attr("/", "checkpoint_dir", st.checkpoint_dir);
  w.set_attr("/", "early_stopping_best", st.early_stopping_best);
  w.set_attr("/", "early_stopping_wait", st.early_stopping_wait);
  w.set_attr("/", "early_stopping_pending", static_cast<int64_t>(st.early_stopping_pending));
  w.set_attr("/", "train_seconds", st.train_seconds);
  w.set_attr("/", "plateau",
             nlohmann::json{{"lr", st.plateau.lr},
                            {"best", std::isnan(st.plateau.best) ? nlohmann::json(nullptr)
                                                                 : nlohmann::json(st.plateau.best)},
                            {"bad", st.plateau.bad},
                            {"cooldown_left", st.plateau.cooldown_left}}
                 .dump());
  w.set_attr("/", "config", to_json(cfg).dump());
  if (data)
    w.set_attr("/", "data",
               nlohmann::json{{"height", data->height},
                              {"width", data->width},
                              {"channels", data->channels},
                              {"mean", data->mean},
                              {"std", data->std},
                              {"class_names", data->class_names}}
                   .dump());
  if (!shard) w.set_attr("/", "format", "mlai-checkpoint-1");
}
}  // namespace

void save_checkpoint(const std::string& path, Module& model, Optimizer* opt,
                     const TrainState& st, const Config& cfg, const NamedTensors& amp,
                     const DataInfo* data, const NamedTensors& current, const NamedTensors& swa,
                     const CheckpointShard* shard, CheckpointImage* snapshot) {
  if (snapshot) {
    *snapshot = CheckpointImage();
    fill_checkpoint(*snapshot, model, opt, st, cfg, amp, data, current, swa, shard);
    return;
  }
  io::H5Writer w(path);
  fill_checkpoint(w, model, opt, st, cfg, amp, data, current, swa, shard);
  w.commit();
}

void CheckpointImage::write(const std::string& name, io::H5Type dtype,
                            const std::vector<int64_t>& shape, const void* data) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const auto* p = static_cast<const char*>(data);
  datasets_.push_back(
      {name, dtype, shape, std::vector<char>(p, p + static_cast<size_t>(n) * io::h5type_size(dtype))});
  bytes_ += static_cast<int64_t>(datasets_.back().bytes.size());
}

void CheckpointImage::save(const std::string& path) const {
  io::H5Writer w(path);
  for (const Dataset& d : datasets_) w.write(d.name, d.dtype, d.shape, d.bytes.data());
  for (const auto& [key, value] : attrs_)
    std::visit([&](const auto& v) { w.set_attr("/", key, v); }, value);
  w.commit();
}

void load_weights(const std::string& path, Module& model, const std::set<std::string>& skip) {
  const CheckpointReader r(path);
  if (!r.has("model"))
    throw std::runtime_error(path + ": not an mlai checkpoint or weights file (no 'model' group)");
  // Compare names and shapes before touching the model.
  std::vector<std::pair<std::string, Tensor*>> mine;
  for (auto& e : model.named_tensors())
    if (!skip.count(e.first)) mine.push_back(e);
  std::set<std::string> stored;
  for (const auto& n : r.list("model"))
    if (!skip.count(n)) stored.insert(n);
  std::vector<std::string> missing, mis_shaped;
  for (auto& [n, t] : mine) {
    if (!stored.erase(n)) {
      missing.push_back(n);
    } else if (r.info("model/" + n).shape != t->shape()) {
      mis_shaped.push_back(n + " (file " + tensor::shape_str(r.info("model/" + n).shape) +
                           ", model " + tensor::shape_str(t->shape()) + ")");
    }
  }
  if (!missing.empty() || !stored.empty() || !mis_shaped.empty()) {
    std::ostringstream os;
    os << path << " does not match the model:";
    auto list = [&](const char* what, const auto& names) {
      if (names.empty()) return;
      os << " " << what << ":";
      int k = 0;
      for (const auto& n : names) os << (k++ ? ", " : " ") << n;
      os << ";";
    };
    list("missing", missing);
    list("unexpected", stored);
    list("mis-shaped", mis_shaped);
    throw std::runtime_error(os.str());
  }
  for (auto& [n, t] : mine) read_into(r, "model/" + n, *t);
}

bool load_group(const std::string& path, const std::string& group, const NamedTensors& into) {
  const CheckpointReader r(path);
  if (!r.has(group)) return false;
  for (auto& [n, t] : into) {
    const std::string name = group + "/" + n;
    if (!r.has(name) || (t->defined() && r.info(name).shape != t->shape()))
      throw std::runtime_error(path + ": group " + group + " does not match the model at " + n);
  }
  for (auto& [n, t] : into)
    if (t->defined()) read_into(r, group + "/" + n, *t);  // (ZeRO: this rank's share)
  return true;
}

bool load_current_model(const std::string& path, Module& model) {
  return load_group(path, "current_model", model.named_tensors());
}

TrainState load_checkpoint(const std::string& path, Module& model, Optimizer* opt,
                           const NamedTensors& amp) {
  load_weights(path, model, {});
  const CheckpointReader r(path);
  // A checkpoint from a float32 run has no loss scaler: the scaler keeps its initial state.
  for (auto& [n, t] : amp)
    if (r.has("amp/" + n)) read_into(r, "amp/" + n, *t);
  if (opt) {
    for (auto& [n, t] : opt->state()) {
      if (!r.has("optimizer"))
        throw std::runtime_error(path + " holds weights only (--save-weights-only, or an export): "
                                 "no optimizer state to resume; start from its weights with "
                                 "--pretrained " + path);
      if (!r.has("optimizer/" + n))
        throw std::runtime_error(path + ": no optimizer state '" + n + "' (was it saved with another --optimizer?)");
      if (t->defined()) read_into(r, "optimizer/" + n, *t);  // (ZeRO: this rank's share)
    }
    opt->set_step_count(r.get_attr_int("/", "optimizer_steps"));
    if (r.has_attr("/", "optimizer_groups"))
      for (const auto& g : nlohmann::json::parse(r.get_attr_string("/", "optimizer_groups")))
        opt->add_group(g.at("params").get<std::vector<std::string>>(), g.at("lr").get<double>(),
                       g.at("start").get<int64_t>());
  }
  for (auto& [n, g] : model.named_generators()) {
    std::vector<int64_t> s(2);
    r.read("rng/" + n, io::H5Type::kInt64, s.data(), 2);
    g->set_state(static_cast<uint64_t>(s[0]), static_cast<uint64_t>(s[1]));
  }
  TrainState st;
  st.epoch = r.get_attr_int("/", "epoch");
  st.next_batch = r.get_attr_int("/", "next_batch");
  st.global_step = r.get_attr_int("/", "global_step");
  if (r.has_attr("/", "epoch_samples")) {  // checkpoints from before elastic resumes lack them
    st.epoch_samples = r.get_attr_int("/", "epoch_samples");
    st.world = r.get_attr_int("/", "world_size");
    st.schedule_shift = r.get_attr_int("/", "schedule_shift");
  }
  if (r.has_attr("/", "best_score")) {
    st.best_score = r.get_attr_double("/", "best_score");
    for (const auto& e : nlohmann::json::parse(r.get_attr_string("/", "top_k")))
      st.top_k.emplace_back(e.at(0).get<double>(), e.at(1).get<std::string>());
    if (r.has_attr("/", "checkpoint_dir")) st.checkpoint_dir = r.get_attr_string("/", "checkpoint_dir");
  } else if (const double acc = r.get_attr_double("/", "best_val_accuracy"); acc >= 0) {
    st.best_score = acc;  // older checkpoints: the best validation accuracy (-1: none)
  }
  if (r.has_attr("/", "early_stopping_wait")) {  // checkpoints from before early stopping lack it
    st.early_stopping_best = r.get_attr_double("/", "early_stopping_best");
    st.early_stopping_wait = r.get_attr_int("/", "early_stopping_wait");
  }
  if (r.has_attr("/", "early_stopping_pending"))
    st.early_stopping_pending = r.get_attr_int("/", "early_stopping_pending") != 0;
  if (r.has_attr("/", "train_seconds")) st.train_seconds = r.get_attr_double("/", "train_seconds");
  if (r.has_attr("/", "ema_updates")) st.ema_updates = r.get_attr_int("/", "ema_updates");
  if (r.has_attr("/", "swa")) {
    const auto j = nlohmann::json::parse(r.get_attr_string("/", "swa"));
    st.swa_updates = j.at("updates").get<int64_t>();
    st.swa_latest_epoch = j.at("latest_epoch").get<int64_t>();
    st.swa_done = j.at("done").get<bool>();
  }
  if (r.has_attr("/", "plateau")) {  // checkpoints from before the plateau schedule lack it
    const auto j = nlohmann::json::parse(r.get_attr_string("/", "plateau"));
    st.plateau.lr = j.at("lr").get<double>();
    if (!j.at("best").is_null()) st.plateau.best = j.at("best").get<double>();
    st.plateau.bad = j.at("bad").get<int64_t>();
    st.plateau.cooldown_left = j.at("cooldown_left").get<int64_t>();
  }
  return st;
}

Config checkpoint_config(const std::string& path) {
  const CheckpointReader r(path);
  try {
    return config_from_json(nlohmann::json::parse(r.get_attr_string("/", "config")));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": unreadable config attribute (" + e.what() + ")");
  }
}

bool checkpoint_data(const std::string& path, DataInfo* out) {
  const CheckpointReader r(path);
  if (!r.has_attr("/", "data")) return false;
  try {
    const auto j = nlohmann::json::parse(r.get_attr_string("/", "data"));
    out->height = j.at("height").get<int64_t>();
    out->width = j.at("width").get<int64_t>();
    out->channels = j.at("channels").get<int64_t>();
    out->mean = j.at("mean").get<std::vector<float>>();
    out->std = j.at("std").get<std::vector<float>>();
    out->class_names = j.at("class_names").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": unreadable data attribute (" + e.what() + ")");
  }
  return true;
}

}  // namespace mlai::nn
