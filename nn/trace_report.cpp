// Chrome trace events and the summary table from a trace's events (see trace_report.h).
#include "nn/trace_report.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <utility>

namespace mlai::nn {

namespace {

nlohmann::json metadata(const char* what, int pid, int tid, nlohmann::json args) {
  nlohmann::json m = {{"name", what}, {"ph", "M"}, {"pid", pid}, {"args", std::move(args)}};
  if (tid >= 0) m["tid"] = tid;
  return m;
}

std::string track_name(int t) {
  if (t >= trace::kBucketTrack)
    return "gradient bucket " + std::to_string(t - trace::kBucketTrack) + " allreduce";
  if (t >= trace::kWorkerTrack) return "data worker " + std::to_string(t - trace::kWorkerTrack);
  if (t == trace::kGpuTrack) return "GPU (the training thread's stream)";
  return "";
}

// "step 17, batch 3" -> "step N, batch N": one row for every step (and loader batch).
std::string summary_name(const std::string& name) {
  std::string out;
  size_t i = 0;
  while (i < name.size()) {
    const bool numbered = (out.size() >= 5 && out.compare(out.size() - 5, 5, "step ") == 0) ||
                          (out.size() >= 6 && out.compare(out.size() - 6, 6, "batch ") == 0);
    if (numbered && std::isdigit(static_cast<unsigned char>(name[i]))) {
      while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
      out += 'N';
    } else {
      out += name[i++];
    }
  }
  return out;
}

}  // namespace

nlohmann::json chrome_trace_events(const std::vector<trace::Event>& events, int pid,
                                   const std::string& process_name) {
  nlohmann::json out = nlohmann::json::array();
  out.push_back(metadata("process_name", pid, -1, {{"name", process_name}}));
  out.push_back(metadata("process_sort_index", pid, -1, {{"sort_index", pid}}));
  out.push_back(metadata("thread_name", pid, 0, {{"name", "training thread"}}));
  std::set<int> tracks;
  for (const trace::Event& e : events) {
    tracks.insert(e.track);
    out.push_back({{"name", e.name},
                   {"cat", e.category},
                   {"ph", "X"},
                   {"ts", e.start_us},
                   {"dur", e.duration_us},
                   {"pid", pid},
                   {"tid", e.track}});
  }
  for (int t : tracks) {
    const std::string name = track_name(t);
    if (name.empty()) continue;
    out.push_back(metadata("thread_name", pid, t, {{"name", name}}));
    out.push_back(metadata("thread_sort_index", pid, t, {{"sort_index", t}}));
  }
  return out;
}

void write_chrome_trace(const std::string& path, const std::vector<std::string>& parts,
                        const nlohmann::json& other) {
  {
    std::ofstream out(path + ".tmp");
    out << "{\"traceEvents\": [";
    bool first = true;
    for (const std::string& r : parts) {
      if (r.empty()) continue;
      out << (first ? "\n" : ",\n") << r;
      first = false;
    }
    out << "\n],\n\"displayTimeUnit\": \"ms\",\n\"otherData\": " << other.dump() << "}\n";
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(path + ".tmp", ec);
      throw std::runtime_error(path + ": could not write the trace");
    }
  }
  std::filesystem::rename(path + ".tmp", path);
}

std::string trace_summary(const std::vector<trace::Event>& events, size_t max_rows) {
  struct Row {
    int64_t calls = 0, gpu_calls = 0;
    double host_us = 0, gpu_us = 0;
  };
  std::map<std::pair<std::string, std::string>, Row> rows;  // (category, name)
  bool gpu = false;
  double steps_host = 0, steps_gpu = 0;
  for (const trace::Event& e : events) {
    const std::string name = summary_name(e.name);
    Row& r = rows[{e.category, name}];
    const bool step = name == "step N" || name.rfind("step N,", 0) == 0;
    if (e.track == trace::kGpuTrack) {
      gpu = true;
      ++r.gpu_calls;
      r.gpu_us += e.duration_us;
      if (step) steps_gpu += e.duration_us;
    } else {
      ++r.calls;
      r.host_us += e.duration_us;
      if (step) steps_host += e.duration_us;
    }
  }
  std::vector<std::pair<const std::pair<std::string, std::string>*, const Row*>> order;
  for (const auto& [key, r] : rows) order.emplace_back(&key, &r);
  std::stable_sort(order.begin(), order.end(), [gpu](const auto& a, const auto& b) {
    return gpu ? a.second->gpu_us > b.second->gpu_us : a.second->host_us > b.second->host_us;
  });
  if (max_rows > 0 && order.size() > max_rows) order.resize(max_rows);
  const double steps_total = gpu ? steps_gpu : steps_host;
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line), "%7s %12s %10s%s %7s  %-10s %s\n", "calls", "host ms",
                "mean", gpu ? "      GPU ms       mean" : "",
                gpu ? "GPU %" : "host %", "category", "name");
  out += line;
  for (const auto& [key, r] : order) {
    const int64_t calls = std::max(r->calls, r->gpu_calls);
    const double mine = gpu ? r->gpu_us : r->host_us;
    char gpu_cols[64] = "";
    if (gpu) {
      if (r->gpu_calls > 0)
        std::snprintf(gpu_cols, sizeof(gpu_cols), " %11.3f %10.4f", r->gpu_us / 1e3,
                      r->gpu_us / 1e3 / static_cast<double>(r->gpu_calls));
      else
        std::snprintf(gpu_cols, sizeof(gpu_cols), " %11s %10s", "-", "-");
    }
    char share[16] = "      -";
    if (steps_total > 0) std::snprintf(share, sizeof(share), "%6.1f%%", 100 * mine / steps_total);
    char host_cols[64];
    if (r->calls > 0)
      std::snprintf(host_cols, sizeof(host_cols), "%12.3f %10.4f", r->host_us / 1e3,
                    r->host_us / 1e3 / static_cast<double>(r->calls));
    else
      std::snprintf(host_cols, sizeof(host_cols), "%12s %10s", "-", "-");
    std::snprintf(line, sizeof(line), "%7lld %s%s %7s  %-10s %s\n", static_cast<long long>(calls),
                  host_cols, gpu_cols, share, key->first.c_str(), key->second.c_str());
    out += line;
  }
  return out;
}

}  // namespace mlai::nn
