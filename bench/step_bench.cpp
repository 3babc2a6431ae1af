// mlai_bench_step: images/s, step time and peak device memory of whole training steps of the
// models users train (mlp, resnet18_cifar, resnet18) at given batch sizes and precisions, on
// synthetic data already on the device, exactly as nn::Trainer runs a step (forward,
// cross-entropy, backward seeded with the loss scale, the scaler's finite check, the fused
// optimizer step with 1/scale folded in, the scale update, zero_grad; with --cuda-graphs the
// forward and backward replayed from a CUDA graph, as mlai_train --cuda-graphs).
// bench/reference_step.py times the same models in PyTorch (eager, AMP, channels_last,
// torch.compile) and bench/step_report.py puts both side by side.
//
//   mlai_bench_step --device cuda --precision 32,16,bf16 --out step.jsonl
//   mlai_bench_step --device cpu --arch mlp --batch mlp=64 --steps 20
//   mlai_bench_step --arch resnet18_cifar --freeze none,backbone,backbone-bn   (fine-tuning)
//
// Each run appends one JSON object to --out (JSONL): impl "mlai", arch, batch, precision,
// optimizer, device, device_name, steps, warmup, seconds, images_per_sec, step_ms,
// forward_ms, backward_ms, optimizer_ms (per phase, from 5 extra steps with timing events on a
// GPU, the host clock on the CPU),
// host_ms (the host's time to issue one step in the timed loop: near step_ms when the host's
// launches, not the GPU, set the pace), gflop_per_image, tflops and mfu (the matrix products'
// FLOPs as torch's FlopCounterMode counts them, their rate, and its share of the card's dense
// peak for the precision, nn/throughput.h; null where not known), peak_mem_mb (device allocator
// high-water mark; null on the CPU), loss_first, loss_last, learned (loss_last < loss_first: the
// fixed batch is being memorised), date; or
// {"error": ...} for a run that failed. Exit status 1 when a run failed or did not learn.
// --trace DIR: after the timed steps, 3 more are traced as mlai_train --profiler-trace traces
// (host spans by module and autograd op, and on a GPU the same spans timed by the GPU), to
// DIR/trace-<arch>-<precision>[-graphs][-unfused].json and a summary table beside it (.txt);
// the row's "trace" names the file.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/parallel.h"
#include "nn/activation_checkpointing.h"
#include "nn/amp.h"
#include "nn/config.h"
#include "nn/conv_layers.h"
#include "nn/finetune.h"
#include "nn/graphed_step.h"
#include "nn/models.h"
#include "nn/optim.h"
#include "nn/throughput.h"
#include "nn/trace_report.h"
#include "tensor/allocator.h"
#include "tensor/determinism.h"
#include "tensor/device.h"
#include "tensor/ops.h"
#include "tensor/stream.h"
#include "tensor/trace.h"

namespace {

using namespace mlai;
using autograd::Variable;
using tensor::Device;
using tensor::DType;
using tensor::Tensor;
using Clock = std::chrono::steady_clock;

std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

struct RunSpec {
  std::string arch, precision, optimizer;
  int64_t batch = 0;
  int steps = 50, warmup = 10;
  Device device = Device::cpu();
  bool fusion = true;   // nn::set_layer_fusion: fused BN + add + relu, cuBLASLt epilogues
  bool graphs = false;  // --cuda-graphs: forward + backward replayed from a CUDA graph
  // --freeze: none, backbone (mlai_train --freeze-backbone) or backbone-bn (with --freeze-bn).
  std::string freeze = "none";
  std::string trace_dir;                     // --trace: where the traced steps go ("" for none)
  std::string matmul_precision = "highest";  // --float32-matmul-precision
  bool cudnn_benchmark = true;               // --cudnn-benchmark
  bool activation_checkpointing = false;     // --activation-checkpointing (its residual blocks)
};

// The traced steps' Chrome trace and summary table (--trace); returns the trace's file name.
std::string write_trace(const RunSpec& r, const std::vector<trace::Event>& events) {
  const std::string mm = r.matmul_precision == "highest" ? "" : "-" + r.matmul_precision;
  std::string stem = "trace-" + r.arch + "-" + r.precision + mm +
                     (r.cudnn_benchmark ? "" : "-heuristic") + (r.graphs ? "-graphs" : "") +
                     (r.fusion ? "" : "-unfused") + (r.freeze == "none" ? "" : "-" + r.freeze) +
                     (r.activation_checkpointing ? "-ckpt" : "");
  const std::string base = r.trace_dir + "/" + stem;
  const std::string what = r.arch + " batch " + std::to_string(r.batch) + " precision " +
                           r.precision + " on " + r.device.str();
  std::string text = nn::chrome_trace_events(events, 0, "mlai_bench_step " + what).dump();
  nn::write_chrome_trace(base + ".json", {text.substr(1, text.size() - 2)},
                         {{"run", what}, {"clock", "host wall clock; the GPU track: CUDA events"}});
  std::ofstream sum(base + ".txt");
  sum << "mlai_bench_step --trace: " << what << ", 3 steps; spans nest, so rows overlap\n"
      << nn::trace_summary(events);
  if (!sum) throw std::runtime_error(base + ".txt: could not write the summary");
  return stem + ".json";
}

nlohmann::json run(const RunSpec& r) {
  nn::set_layer_fusion(r.fusion);
  kernels::set_float32_matmul_precision(nn::parse_matmul_precision(r.matmul_precision));
  tensor::set_cudnn_benchmark(r.cudnn_benchmark);
  nn::ModelSpec spec;
  if (r.arch == "mlp") {
    spec.height = spec.width = 28;
    spec.channels = 1;
  } else {
    spec.height = spec.width = 32;  // the speed table: 32x32 inputs for both ResNets
    spec.channels = 3;
  }
  spec.num_classes = 10;
  spec.seed = 1;
  const nn::Precision precision = nn::parse_precision(r.precision);
  const DType dt = nn::compute_dtype(precision);
  auto model = nn::make_model(r.arch, spec);
  model->to(r.device);
  model->set_compute_dtype(dt);
  if (r.freeze != "none") nn::freeze_backbone(*model, r.freeze == "backbone");
  if (r.activation_checkpointing && nn::enable_activation_checkpointing(*model) == 0)
    throw std::invalid_argument(r.arch + " has no residual blocks to checkpoint");
  model->train();
  nn::OptimizerConfig oc;
  oc.name = r.optimizer;
  if (r.optimizer == "sgd" || r.optimizer == "lars") {  // the usual CIFAR recipe
    oc.lr = r.optimizer == "sgd" ? 0.1 : 1.0;
    oc.momentum = 0.9;
    oc.weight_decay = 5e-4;
  } else {
    oc.lr = 1e-3;
    if (r.optimizer == "lamb") oc.weight_decay = 0.01;  // adapted only with weight decay
  }
  auto opt = nn::make_optimizer(model->named_parameters(), oc);
  opt->set_working(model->working_parameters());
  nn::GradScaler scaler(r.device, precision == nn::Precision::kFloat16);
  tensor::Generator gen(7);
  const Tensor images =
      Tensor::normal({r.batch, spec.height, spec.width, spec.channels}, 0.0, 1.0, gen)
          .to(dt)
          .to(r.device);
  std::vector<int64_t> y(static_cast<size_t>(r.batch));
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int64_t>((i * 7 + 3) % 10);
  const Tensor labels = Tensor::from_vector(y, {r.batch}).to(r.device);

  // Phase marks: on a GPU timing events recorded on the stream (no sync inside the step: the
  // times are read after the loop), on the CPU the host clock (every op is synchronous there).
  struct Marks {
    std::vector<tensor::Event> ev;
    std::vector<Clock::time_point> t;
  };
  const bool gpu = r.device.is_cuda();
  int64_t global_step = 0;
  // --cuda-graphs: as nn::Trainer runs it (the graph zeroes the gradients at its start and
  // ends with the optimizer step; its replay is the forward phase below, and the backward and
  // optimizer phases hold only the staging of the optimizer's rate and step number).
  std::unique_ptr<nn::GraphedStep> graphed;
  if (r.graphs) {
    graphed = std::make_unique<nn::GraphedStep>(*model);
    opt->set_capturable(true);
  }
  auto forward_backward = [&](const Tensor& x, const Tensor& yy) {
    opt->zero_grad();
    Variable logits = (*model)(Variable(x));
    Variable l = autograd::cross_entropy(logits, yy, 0.0);
    if (scaler.enabled()) {
      l.backward(scaler.seed());
    } else {
      l.backward();
    }
    return std::pair<Tensor, Tensor>(logits.data(), l.data());
  };
  auto step = [&](Marks* m) -> Tensor {
    // (Spans cost one atomic load unless tracing: the --trace steps below.)
    trace::Span step_span([&] { return "step " + std::to_string(global_step); }, "trainer");
    std::optional<trace::Span> phase;
    auto mark = [&](const char* next = nullptr) {
      phase.reset();
      if (next != nullptr) phase.emplace(next, "trainer");
      if (!m) return;
      if (gpu) {
        m->ev.emplace_back(r.device, /*timing=*/true);
        m->ev.back().record(tensor::current_stream(r.device));
      } else {
        m->t.push_back(Clock::now());
      }
    };
    mark("forward");
    if (graphed) {
      opt->set_step_count(global_step, scaler.skipped_counter());
      opt->stage();
      graphed->run(images, labels, [&](const Tensor& x, const Tensor& yy) {
        auto out = forward_backward(x, yy);
        nn::scaled_step(*opt, scaler, 1.0f, global_step);
        return out;
      });
      opt->set_step_count(++global_step, scaler.skipped_counter());
      mark("backward");
      mark("optimizer step");
      mark();
      return graphed->loss();
    }
    Variable loss = autograd::cross_entropy((*model)(Variable(images)), labels, 0.0);
    mark("backward");
    if (scaler.enabled()) {
      loss.backward(scaler.seed());
    } else {
      loss.backward();
    }
    mark("optimizer step");
    nn::scaled_step(*opt, scaler, 1.0f, global_step++);
    opt->zero_grad();
    mark();
    return loss.data();
  };
  const tensor::Stream stream = tensor::current_stream(r.device);
  if (r.device.is_cuda()) tensor::cuda_allocator(r.device.index).reset_peak();
  // The first step's matrix products (a graph's first steps run eagerly, so it counts them too).
  const int64_t flops_before = autograd::flop_count();
  Tensor first = step(nullptr);
  const auto step_flops = static_cast<double>(autograd::flop_count() - flops_before);
  for (int i = 1; i < r.warmup; ++i) step(nullptr);
  stream.synchronize();
  const auto t0 = Clock::now();
  Tensor last;
  for (int i = 0; i < r.steps; ++i) last = step(nullptr);  // no host sync inside the timed loop
  const double issued = std::chrono::duration<double>(Clock::now() - t0).count();
  stream.synchronize();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  // The breakdown: a few more steps with marks between the phases (kept out of the timed
  // loop so that the marks cannot slow what is reported above).
  constexpr int kBreakdownSteps = 5;
  Marks marks;
  for (int i = 0; i < kBreakdownSteps; ++i) step(&marks);
  stream.synchronize();
  double phase_ms[3] = {0, 0, 0};
  for (int i = 0; i < kBreakdownSteps; ++i)
    for (int p = 0; p < 3; ++p) {
      const size_t a = static_cast<size_t>(i * 4 + p);
      phase_ms[p] +=
          gpu ? marks.ev[a].elapsed_ms(marks.ev[a + 1])
              : std::chrono::duration<double, std::milli>(marks.t[a + 1] - marks.t[a]).count();
    }
  nlohmann::json j;
  if (!r.trace_dir.empty()) {
    model->label_for_trace();
    trace::start(r.device);
    for (int i = 0; i < 3; ++i) step(nullptr);
    stream.synchronize();
    j["trace"] = write_trace(r, trace::stop());
  }
  j["impl"] = "mlai";
  j["arch"] = r.arch;
  j["batch"] = r.batch;
  j["precision"] = nn::precision_name(precision);
  j["optimizer"] = r.optimizer;
  j["fusion"] = r.fusion;
  j["cuda_graphs"] = r.graphs;
  j["freeze"] = r.freeze;
  if (r.activation_checkpointing) j["activation_checkpointing"] = true;
  if (r.matmul_precision != "highest") j["float32_matmul_precision"] = r.matmul_precision;
  if (!r.cudnn_benchmark) j["cudnn_benchmark"] = false;
  j["device"] = r.device.str();
  j["device_name"] = r.device.is_cuda() ? tensor::cuda_device_name(r.device.index) : "cpu";
  j["steps"] = r.steps;
  j["warmup"] = r.warmup;
  j["seconds"] = seconds;
  j["images_per_sec"] = static_cast<double>(r.batch) * r.steps / seconds;
  j["step_ms"] = seconds / r.steps * 1e3;
  j["host_ms"] = issued / r.steps * 1e3;
  // FLOPs as torch's FlopCounterMode counts them (the matrix products, forward and backward),
  // their rate, and that rate over the card's dense peak for this precision (null: not known).
  j["gflop_per_image"] = step_flops / static_cast<double>(r.batch) * 1e-9;
  j["tflops"] = step_flops * r.steps / seconds * 1e-12;
  const double peak =
      nn::peak_flops(j["device_name"].get<std::string>(),
                     nn::peak_dtype(j["precision"].get<std::string>(), r.matmul_precision));
  if (peak > 0) {
    j["mfu"] = step_flops * r.steps / seconds / peak;
  } else {
    j["mfu"] = nullptr;
  }
  // Device time per phase (forward + loss, backward, scaler + optimizer step + zero_grad).
  j["forward_ms"] = phase_ms[0] / kBreakdownSteps;
  j["backward_ms"] = phase_ms[1] / kBreakdownSteps;
  j["optimizer_ms"] = phase_ms[2] / kBreakdownSteps;
  if (r.device.is_cuda()) {
    j["peak_mem_mb"] =
        static_cast<double>(tensor::cuda_allocator(r.device.index).stats().peak_bytes) / (1 << 20);
  } else {
    j["peak_mem_mb"] = nullptr;
  }
  const double l0 = first.item(), l1 = last.item();
  j["loss_first"] = l0;
  j["loss_last"] = l1;
  j["learned"] = std::isfinite(l1) && l1 < l0;
  if (scaler.enabled()) {
    j["loss_scale"] = scaler.scale();
    j["skipped_steps"] = scaler.skipped_steps();
  }
  j["date"] = utc_now();
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  mlai::kernels::cpu::configure_threads(1);  // the threads as mlai_train sets them (one process)
  CLI::App app{"mlai_bench_step: training-step throughput of mlp / resnet18_cifar / resnet18"};
  std::string archs = "mlp,resnet18_cifar,resnet18";
  std::string batches = "mlp=64,resnet18_cifar=256,resnet18=256";
  std::string precisions = "32,16";
  std::string optimizer;  // default: adam for mlp and the ViTs, sgd for the CNNs
  std::string device = tensor::cuda_available() ? "cuda" : "cpu";
  std::string out;
  int steps = 50, warmup = 10;
  double budget = 0;
  std::string fusion = "on";
  bool graphs = false;
  std::string freezes = "none";
  bool activation_checkpointing = false;
  std::string trace_dir, matmul_precision = "highest";
  bool cudnn_benchmark = true;
  app.add_option("--arch", archs, "Comma list of models")->capture_default_str();
  app.add_option("--batch", batches, "Batch per model: arch=B,... or one B for all")
      ->capture_default_str();
  app.add_option("--precision", precisions, "Comma list of 32, 16, bf16")->capture_default_str();
  app.add_option("--optimizer", optimizer,
                 "sgd, adam, adamw, lars or lamb (default: adam for mlp and the ViTs, whose "
                 "recipes use it and which SGD at 0.1 sends astray; sgd otherwise)");
  app.add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--steps", steps, "Timed steps per run")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup,
                 "Untimed steps first (allocator cache, cuDNN algorithm search)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--out", out, "Append one JSON line per run to this file");
  app.add_option("--time-budget", budget,
                 "Skip the remaining runs after this many seconds (0: none)");
  app.add_option("--fusion", fusion,
                 "on, off or both: layer fusion (fused batch norm + add + relu, cuBLASLt "
                 "epilogues); off rows say \"fusion\": false")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_flag("--cuda-graphs", graphs,
               "Replay each step's forward + backward from a CUDA graph (as mlai_train "
               "--cuda-graphs); rows say \"cuda_graphs\": true");
  app.add_flag("--activation-checkpointing", activation_checkpointing,
               "Every run with mlai_train --activation-checkpointing (the ResNets' blocks run "
               "again in backward): peak memory against time");
  app.add_option("--freeze", freezes,
                 "Comma list of none, backbone (mlai_train --freeze-backbone: the head and batch "
                 "norm train) and backbone-bn (--freeze-bn too: the head alone)")
      ->capture_default_str();
  app.add_option("--trace", trace_dir,
                 "Trace 3 more steps of each run (as mlai_train --profiler-trace, GPU-timed on "
                 "a GPU) into this folder: trace-<arch>-<precision>....json and a summary .txt");
  app.add_option("--float32-matmul-precision", matmul_precision,
                 "highest, high (TF32) or medium (bf16 GEMM products): float32 runs on a GPU, as "
                 "mlai_train's flag; rows say \"float32_matmul_precision\" when not highest")
      ->capture_default_str();
  app.add_option("--cudnn-benchmark", cudnn_benchmark,
                 "true: cuDNN algorithms timed once per shape (mlai_train's default); false: "
                 "cuDNN's heuristic choice; rows say \"cudnn_benchmark\": false")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    nn::parse_matmul_precision(matmul_precision);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_bench_step: %s\n", e.what());
    return 2;
  }
  if (!trace_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(trace_dir, ec);
    if (!std::filesystem::is_directory(trace_dir)) {
      std::fprintf(stderr, "mlai_bench_step: --trace %s: cannot create the folder\n",
                   trace_dir.c_str());
      return 2;
    }
  }
  for (const std::string& f : split(freezes))
    if (f != "none" && f != "backbone" && f != "backbone-bn") {
      std::fprintf(stderr, "mlai_bench_step: --freeze %s: expected none, backbone or backbone-bn\n",
                   f.c_str());
      return 2;
    }
  std::vector<bool> fusions;
  if (fusion != "off") fusions.push_back(true);
  if (fusion != "on") fusions.push_back(false);

  std::map<std::string, int64_t> batch_of;
  for (const std::string& item : split(batches)) {
    const auto eq = item.find('=');
    try {
      if (eq == std::string::npos) {
        for (const std::string& a : split(archs)) batch_of[a] = std::stoll(item);
      } else {
        batch_of[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "mlai_bench_step: --batch %s: expected arch=B,... or a number\n",
                   batches.c_str());
      return 2;
    }
  }
  Device dev;
  try {
    dev = tensor::parse_device(device);
    tensor::check_device(dev);
    for (const std::string& p : split(precisions)) nn::parse_precision(p);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlai_bench_step: %s\n", e.what());
    return 2;
  }
  std::ofstream jsonl;
  if (!out.empty()) {
    jsonl.open(out, std::ios::app);
    if (!jsonl) {
      std::fprintf(stderr, "mlai_bench_step: --out %s: cannot open for appending\n", out.c_str());
      return 2;
    }
  }
  const auto start = Clock::now();
  int failures = 0;
  std::printf("%-16s %6s %5s %12s %10s %10s %9s  %s\n", "arch", "batch", "prec", "images/s",
              "step ms", "peak MiB", "loss", "device");
  for (const std::string& arch : split(archs)) {
    for (const std::string& prec : split(precisions))
      for (const bool fused : fusions)
        for (const std::string& freeze : split(freezes)) {
          RunSpec r;
          r.fusion = fused;
          r.graphs = graphs;
          r.freeze = freeze;
          r.trace_dir = trace_dir;
          r.matmul_precision = matmul_precision;
          r.cudnn_benchmark = cudnn_benchmark;
          r.activation_checkpointing = activation_checkpointing;
          const std::string shown = prec +
                                    (matmul_precision == "high"     ? " tf32"
                                     : matmul_precision == "medium" ? " bf16mm"
                                                                    : "") +
                                    (cudnn_benchmark ? "" : " heur") + (fused ? "" : " unfused") +
                                    (graphs ? " graphs" : "") +
                                    (freeze == "none" ? "" : " frozen " + freeze) +
                                    (activation_checkpointing ? " ckpt" : "");
          r.arch = arch;
          r.precision = prec;
          const bool adam = arch == "mlp" || arch.starts_with("vit");
          r.optimizer = optimizer.empty() ? (adam ? "adam" : "sgd") : optimizer;
          r.batch = batch_of.count(arch) ? batch_of[arch] : 64;
          r.steps = steps;
          r.warmup = warmup;
          r.device = dev;
          nlohmann::json j;
          if (budget > 0 && std::chrono::duration<double>(Clock::now() - start).count() > budget) {
            j = {{"impl", "mlai"},   {"arch", arch},
                 {"batch", r.batch}, {"precision", prec},
                 {"fusion", fused},  {"cuda_graphs", graphs},
                 {"freeze", freeze}, {"skipped", "time budget"}};
            std::printf("%-16s %6lld %5s  skipped (time budget)\n", arch.c_str(),
                        static_cast<long long>(r.batch), shown.c_str());
          } else {
            try {
              j = run(r);
              std::printf(
                  "%-16s %6lld %5s %12.0f %10.3f %10s %4.2f>%4.2f  %s  (fwd %.2f, bwd %.2f, opt "
                  "%.2f "
                  "ms; %.3g TFLOP/s%s)\n",
                  arch.c_str(), static_cast<long long>(r.batch), shown.c_str(),
                  j["images_per_sec"].get<double>(), j["step_ms"].get<double>(),
                  j["peak_mem_mb"].is_null()
                      ? "-"
                      : std::to_string(j["peak_mem_mb"].get<double>()).substr(0, 8).c_str(),
                  j["loss_first"].get<double>(), j["loss_last"].get<double>(),
                  j["device_name"].get<std::string>().c_str(), j["forward_ms"].get<double>(),
                  j["backward_ms"].get<double>(), j["optimizer_ms"].get<double>(),
                  j["tflops"].get<double>(),
                  j["mfu"].is_null()
                      ? ""
                      : (", MFU " + std::to_string(100 * j["mfu"].get<double>()).substr(0, 4) + "%")
                            .c_str());
              if (!j["learned"].get<bool>()) {
                std::printf("  ^ did not learn (loss did not fall on a fixed batch)\n");
                ++failures;
              }
            } catch (const std::exception& e) {
              j = {{"impl", "mlai"},    {"arch", arch},     {"batch", r.batch},
                   {"precision", prec}, {"fusion", fused},  {"cuda_graphs", graphs},
                   {"freeze", freeze},  {"error", e.what()}};
              std::printf("%-16s %6lld %5s  error: %s\n", arch.c_str(),
                          static_cast<long long>(r.batch), shown.c_str(), e.what());
              ++failures;
            }
          }
          std::fflush(stdout);
          if (jsonl) jsonl << j.dump() << "\n" << std::flush;
        }
  }
  return failures ? 1 : 0;
}
