// What --profiler-trace (and mlai_bench_step --trace) write from trace::stop()'s events: Chrome
// trace events for ui.perfetto.dev / chrome://tracing, and a summary table by span name, like
// the table Lightning's SimpleProfiler prints at the end of fit.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tensor/trace.h"

namespace mlai::nn {

// One process's events (pid) as Chrome trace events: metadata naming the process and its
// tracks (training thread, GPU, data workers, gradient buckets), then one "X" event per span.
nlohmann::json chrome_trace_events(const std::vector<trace::Event>& events, int pid,
                                   const std::string& process_name);

// Writes {"traceEvents": [...all parts' events...], "otherData": other} to path atomically
// (a temporary file renamed over it). Each part is a JSON array's text (dist::gather_host
// carries them between ranks as text). Throws naming the path on a write error.
void write_chrome_trace(const std::string& path, const std::vector<std::string>& parts,
                        const nlohmann::json& other);

// Spans by (category, name): calls, total and mean milliseconds on the host clock and, where
// the trace has a GPU track, on the GPU's; and each row's share of the traced steps' total
// (spans named "step ..."). Sorted by GPU total when there is one, else host total; at most
// max_rows rows (0: all). Spans nest (a module's forward holds its layers'), so rows overlap.
std::string trace_summary(const std::vector<trace::Event>& events, size_t max_rows = 0);

}  // namespace mlai::nn
