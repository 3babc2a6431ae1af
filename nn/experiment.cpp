// Experiment directory, machine facts, model summary, profiler, progress line.
#include "nn/experiment.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <thread>

#include "kernels/parallel.h"
#include "nn/checkpoint_shards.h"

#ifndef MLAI_GIT_COMMIT
#define MLAI_GIT_COMMIT "unknown"
#endif

namespace mlai::nn {

namespace fs = std::filesystem;

std::string make_version_dir(const std::string& log_dir, const std::string& experiment) {
  const fs::path base = fs::path(log_dir) / experiment;
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec)
    throw std::runtime_error("cannot create log directory " + base.string() + ": " + ec.message());
  fs::path dir;
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && *job) {
    dir = base / ("version_" + std::string(job));
    // A requeued job reuses its directory; a second run step of the same job gets a suffix.
    if (const char* step = std::getenv("SLURM_STEP_ID"); step && *step && std::string(step) != "0")
      dir = base / ("version_" + std::string(job) + "." + step);
  } else {
    for (int n = 0;; ++n) {
      dir = base / ("version_" + std::to_string(n));
      if (fs::create_directory(dir, ec)) break;  // atomic: two runs never share a version
      if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
    }
  }
  fs::create_directories(dir / "checkpoints", ec);
  if (ec)
    throw std::runtime_error("cannot create " + (dir / "checkpoints").string() + ": " +
                             ec.message());
  return dir.string();
}

std::string find_last_checkpoint(const std::string& log_dir, const std::string& experiment) {
  const fs::path base = fs::path(log_dir) / experiment;
  std::error_code ec;
  if (!fs::is_directory(base, ec)) return "";
  fs::path newest;
  fs::file_time_type newest_time;
  for (const auto& e : fs::directory_iterator(base, ec)) {
    if (e.path().filename().string().rfind("version_", 0) != 0) continue;
    const fs::path ckpt = e.path() / "checkpoints" / "last.h5";  // (a file, or a directory of shards)
    const std::string at = checkpoint_path(ckpt.string());
    if (at.empty()) continue;
    const auto t = fs::last_write_time(at, ec);
    if (ec) continue;
    if (newest.empty() || t > newest_time) {
      newest = ckpt;
      newest_time = t;
    }
  }
  return newest.string();
}

nlohmann::json machine_info(const std::string& device, const std::string& command_line) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  nlohmann::json j;
  j["hostname"] = host;
  j["cpu_cores"] = std::thread::hardware_concurrency();
  j["kernel_threads"] = kernels::cpu::pool_threads();
  j["device"] = device;
  j["git_commit"] = MLAI_GIT_COMMIT;
  j["command"] = command_line;
  for (const char* v : {"SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_NODELIST", "SLURM_NNODES",
                        "SLURM_NTASKS", "SLURM_PROCID"})
    if (const char* val = std::getenv(v)) j["slurm"][v] = val;
  return j;
}

namespace {
std::string human(int64_t n) {
  std::ostringstream os;
  if (n >= 1000000000)
    os << std::fixed << std::setprecision(1) << n / 1e9 << " G";
  else if (n >= 1000000)
    os << std::fixed << std::setprecision(1) << n / 1e6 << " M";
  else if (n >= 1000)
    os << std::fixed << std::setprecision(1) << n / 1e3 << " K";
  else
    os << n;
  return os.str();
}
// Rows of index, name, type, parameters (and FLOPs), every module depth first.
void summarize(Module& m, const std::string& name, const ModuleFlops* flops,
               std::vector<std::vector<std::string>>& rows) {
  for (auto& [n, c] : m.children()) {
    const std::string full = name.empty() ? n : name + "." + n;
    rows.push_back(
        {std::to_string(rows.size()), full, c->type_name(), human(c->parameter_count())});
    if (flops != nullptr) {
      const int64_t f = flops->of(c.get());
      rows.back().push_back(f < 0 ? "-" : human(f));
    }
    summarize(*c, full, flops, rows);
  }
}
}  // namespace

std::string model_summary(Module& m, const ModuleFlops* flops) {
  std::vector<std::vector<std::string>> rows;
  summarize(m, "", flops, rows);
  std::vector<std::string> head = {"", "Name", "Type", "Params"};
  if (flops != nullptr) head.push_back("FLOPs");
  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = std::max<size_t>(head[i].size(), i == 0 ? 1 : 4);
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  size_t width = 0;
  for (size_t x : w) width += x + 3;
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& r) {
    os << " ";
    for (size_t i = 0; i < r.size(); ++i) {
      os << (i == 0 ? " " : " | ") << (i < 3 ? std::left : std::right)
         << std::setw(static_cast<int>(w[i])) << r[i];
    }
    os << "\n";
  };
  line(head);
  os << "  " << std::string(width - 3, '-') << "\n";
  for (auto& r : rows) line(r);
  const int64_t total = m.parameter_count();
  int64_t trainable = 0;  // (a frozen backbone's parameters require no gradients)
  for (const auto& [n, v] : m.named_parameters())
    if (v.requires_grad()) trainable += v.numel();
  os << "  " << std::string(width - 3, '-') << "\n";
  os << "  " << std::left << std::setw(10) << human(trainable) << "Trainable params\n";
  os << "  " << std::left << std::setw(10) << human(total - trainable) << "Non-trainable params\n";
  os << "  " << std::left << std::setw(10) << human(total) << "Total params\n";
  os << "  " << std::left << std::setw(10) << std::fixed << std::setprecision(3)
     << total * 4.0 / 1e6 << "Total estimated model params size (MB)\n";
  if (flops != nullptr && flops->of(&m) >= 0)
    os << "  " << std::left << std::setw(10) << human(flops->of(&m))
       << "Total FLOPs (forward, one sample; as torch's FlopCounterMode counts)\n";
  return os.str();
}

void Profiler::add(const std::string& action, double seconds) {
  auto [it, inserted] = entries_.try_emplace(action);
  if (inserted) order_.push_back(action);
  it->second.calls += 1;
  it->second.seconds += seconds;
}

double Profiler::total(const std::string& action) const {
  auto it = entries_.find(action);
  return it == entries_.end() ? 0.0 : it->second.seconds;
}

void Profiler::set_spread(const std::string& action, const Spread& s) {
  auto [it, inserted] = entries_.try_emplace(action);
  if (inserted) order_.push_back(action);
  it->second.spread_set = true;
  it->second.spread = s;
}

std::string Profiler::report(double wall) const {
  bool spread = false;
  for (const auto& [a, e] : entries_) spread |= e.spread_set;
  std::ostringstream os;
  os << "Profiler report (wall clock " << std::fixed << std::setprecision(2) << wall << " s"
     << (spread ? "; totals of this rank, and of the fastest and slowest rank" : "") << ")\n";
  os << "  " << std::left << std::setw(18) << "Action" << std::right << std::setw(14) << "Mean (ms)"
     << std::setw(10) << "Calls" << std::setw(14) << "Total (s)" << std::setw(10) << "Percent";
  if (spread) os << std::setw(12) << "Min (s)" << std::setw(12) << "Max (s)" << std::setw(9) << "Slowest";
  os << "\n";
  for (const auto& a : order_) {
    const Entry& e = entries_.at(a);
    os << "  " << std::left << std::setw(18) << a << std::right << std::setw(14)
       << std::setprecision(3) << (e.calls ? 1e3 * e.seconds / static_cast<double>(e.calls) : 0.0)
       << std::setw(10) << e.calls << std::setw(14) << std::setprecision(3) << e.seconds
       << std::setw(9) << std::setprecision(1) << (wall > 0 ? 100.0 * e.seconds / wall : 0.0)
       << "%";
    if (e.spread_set)
      os << std::setw(12) << std::setprecision(3) << e.spread.min << std::setw(12) << e.spread.max
         << std::setw(9) << ("rank " + std::to_string(e.spread.slowest));
    os << "\n";
  }
  return os.str();
}

nlohmann::json Profiler::to_json(double wall, int world) const {
  nlohmann::json actions = nlohmann::json::object();
  for (const auto& a : order_) {
    const Entry& e = entries_.at(a);
    nlohmann::json j{{"calls", e.calls}, {"total_s", e.seconds}};
    if (e.spread_set)
      j.update({{"min_s", e.spread.min},
                {"max_s", e.spread.max},
                {"mean_s", e.spread.mean},
                {"slowest_rank", e.spread.slowest}});
    actions[a] = j;
  }
  return {{"wall_seconds", wall}, {"world", world}, {"actions", actions}};
}

ProgressLine::ProgressLine(bool enabled, std::string label, int64_t total)
    : enabled_(enabled && total > 0),
      tty_(isatty(STDOUT_FILENO) != 0),
      label_(std::move(label)),
      total_(total),
      start_(std::chrono::steady_clock::now()),
      last_(start_ - std::chrono::seconds(1)) {}

namespace {
std::string clock_time(double seconds) {  // 05:07, or 1:02:03 from an hour on (as tqdm)
  const auto s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}
}  // namespace

void ProgressLine::update(int64_t done, const std::function<double()>& loss, double ips) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool due = tty_ ? (now - last_ >= std::chrono::milliseconds(200) || done >= total_)
                        : (next_quarter_ < 4 && done * 4 >= next_quarter_ * total_);
  if (first_done_ < 0) first_done_ = done - 1;  // the step this line was made for
  if (!due) return;
  // Elapsed in this epoch and the time left at the pace so far (tqdm's [elapsed<remaining]).
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const int64_t run = done - first_done_;
  const double left = run > 0 ? elapsed * static_cast<double>(total_ - done) / run : 0.0;
  std::ostringstream os;
  os << label_ << " " << done << "/" << total_ << " [" << clock_time(elapsed) << "<"
     << clock_time(left) << "]";
  if (loss) os << "    loss: " << std::fixed << std::setprecision(4) << loss();
  if (ips > 0) os << "    images/s: " << std::fixed << std::setprecision(0) << ips;
  if (tty_) {
    last_ = now;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / total_);
    std::printf("\r\033[K[%s%s] %s", std::string(static_cast<size_t>(filled), '#').c_str(),
                std::string(static_cast<size_t>(kWidth - filled), '.').c_str(), os.str().c_str());
    std::fflush(stdout);
    drawn_ = true;
  } else {
    while (next_quarter_ < 4 && done * 4 >= next_quarter_ * total_) ++next_quarter_;
    std::printf("%s\n", os.str().c_str());
    std::fflush(stdout);
  }
}

void ProgressLine::finish() {
  if (enabled_ && tty_ && drawn_) {
    std::printf("\r\033[K");
    std::fflush(stdout);
  }
}

LaggedMean::LaggedMean(const tensor::Device& dev) : dev_(dev) {
  if (dev.is_cuda()) {
    host_ = Tensor::empty({}, DType::kFloat32, tensor::Device::cpu(), /*pinned=*/true);
    landed_ = tensor::Event(dev);
  }
}

LaggedMean::~LaggedMean() {
  try {
    if (pending_) landed_.synchronize();
  } catch (...) {  // a broken device: nothing to protect any more
  }
}

double LaggedMean::read(const Tensor& sum, int64_t count) {
  if (!dev_.is_cuda()) return sum.item() / static_cast<double>(std::max<int64_t>(count, 1));
  if (pending_ && (first_ || landed_.query())) {
    if (first_) landed_.synchronize();
    value_ = host_.item() / static_cast<double>(std::max<int64_t>(count_at_copy_, 1));
    pending_ = first_ = false;
  }
  if (!pending_) {
    host_.copy_from(sum, /*async=*/true);
    landed_.record(tensor::current_stream(dev_));
    count_at_copy_ = count;
    pending_ = true;
    if (first_) return read(sum, count);  // the first value: wait for it once
  }
  return value_;
}

}  // namespace mlai::nn
