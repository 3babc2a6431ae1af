// The training loop (see trainer.h). Per-step statistics stay on the device (a loss sum and a
// confusion matrix) and reach the host once per epoch or per progress-line refresh.
#include "nn/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "dist/communicator.h"
#include "io/loader.h"
#include "io/tensorboard.h"
#include "nn/amp.h"
#include "nn/conv_layers.h"
#include "nn/lr_schedule.h"
#include "nn/models.h"
#include "nn/step_log.h"
#include "tensor/determinism.h"
#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::nn {

namespace t = mlai::tensor;
using Clock = std::chrono::steady_clock;

namespace {
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (sig == SIGINT && g_stop_signal.load() == SIGINT) std::_Exit(130);  // second Ctrl-C
  g_stop_signal.store(sig);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string confusion_json(const io::ConfusionMatrix& cm) {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < cm.num_classes(); ++i) {
    nlohmann::json r = nlohmann::json::array();
    for (int j = 0; j < cm.num_classes(); ++j) r.push_back(cm.count(i, j));
    rows.push_back(r);
  }
  return rows.dump();
}

io::ConfusionMatrix to_matrix(const Tensor& counts, const io::Dataset& ds) {
  io::ConfusionMatrix cm(ds.num_classes, ds.class_names);
  cm.add_counts(counts.to_vector<int64_t>().data());
  return cm;
}

const std::vector<std::string> kCsvColumns = {
    "epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
    "val_precision", "val_recall", "val_f1", "images_per_sec", "epoch_seconds",
    "data_wait_fraction", "loss_scale", "skipped_steps", "val_confusion", "test_loss", "test_accuracy", "test_precision",
    "test_recall", "test_f1", "test_confusion"};
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) sigaction(s, &sa, nullptr);
}

namespace {
// One GPU per rank, picked by the local rank; the CPU otherwise.
t::Device select_device(const std::string& spec, const dist::ProcessGroup& g) {
  t::Device d = t::parse_device(spec);
  if (d.is_cpu() || g.world() == 1) return d;
  const int gpus = t::cuda_device_count();
  if (g.local_world() > gpus)
    throw std::runtime_error("this node has " + std::to_string(gpus) + " CUDA device(s) but " +
                             std::to_string(g.local_world()) +
                             " ranks run on it: start at most one rank per GPU");
  return t::Device::cuda(g.local_rank());
}
}  // namespace

Trainer::Trainer(Config cfg, std::string command_line, dist::ProcessGroup& group)
    : cfg_(std::move(cfg)),
      command_line_(std::move(command_line)),
      group_(group),
      main_(group.is_main()) {
  cfg_.validate();
  group_.set_timeout(cfg_.dist_timeout);
  device_ = select_device(cfg_.device, group_);
  t::set_current_device(device_);
  t::set_deterministic(cfg_.deterministic);  // cuDNN: reproducible algorithms only
  data_ = io::load_dataset(cfg_.dataset, cfg_.data_dir, cfg_.val_split, cfg_.seed,
                           cfg_.data_path, cfg_.cache);
  if (main_)
    for (const auto& w : data_.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (cfg_.overfit_batches > 0) {  // the same first batches for training and validation
    const int64_t n = std::min(data_.train.count, cfg_.overfit_batches * cfg_.batch_size);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
    data_.train = io::subset(data_.train, idx);
    data_.val = data_.train;
  }
  ModelSpec spec;
  spec.height = data_.train.height;
  spec.width = data_.train.width;
  spec.channels = data_.train.channels;
  spec.num_classes = data_.train.num_classes;
  spec.hidden = cfg_.hidden;
  spec.dropout = cfg_.dropout;
  spec.seed = cfg_.seed;
  model_ = make_model(cfg_.arch, spec);
  if (!cfg_.pretrained.empty()) {  // before the move: loads on the host
    std::set<std::string> skip;
    if (cfg_.reset_head) skip = {"fc.weight", "fc.bias"};
    load_weights(cfg_.pretrained, *model_, skip);
    if (main_)
      std::printf("initial weights from %s%s\n", cfg_.pretrained.c_str(),
                  cfg_.reset_head ? " (fc re-initialised)" : "");
  }
  model_->to(device_);
  precision_ = parse_precision(cfg_.precision);
  model_->set_compute_dtype(compute_dtype(precision_));  // working copies for --precision 16/bf16
  const int world = group_.world();
  if (cfg_.lr_scale == "linear") cfg_.lr *= world;  // the effective batch grew world-fold
  OptimizerConfig oc;
  oc.name = cfg_.optimizer;
  oc.lr = cfg_.lr;
  oc.momentum = cfg_.optimizer == "sgd" ? cfg_.momentum : 0.0;
  oc.weight_decay = cfg_.weight_decay;
  oc.nesterov = cfg_.nesterov;
  oc.beta1 = cfg_.beta1;
  oc.beta2 = cfg_.beta2;
  oc.eps = cfg_.eps;
  if (cfg_.gradient_clip_algorithm == "value") oc.clip_value = cfg_.gradient_clip_val;
  opt_ = make_optimizer(model_->named_parameters(), oc);
  opt_->set_working(model_->working_parameters());
  scaler_ = std::make_unique<GradScaler>(device_, precision_ == Precision::kFloat16);
  if (cfg_.cuda_graphs) {
    if (!device_.is_cuda())
      throw std::invalid_argument("--cuda-graphs needs --device cuda (the CPU backend has no "
                                  "graphs), got --device " + cfg_.device);
    if (group_.world() > 1)
      throw std::invalid_argument(
          "--cuda-graphs runs one process alone for now: the data-parallel reducer's "
          "allreduces during backward are not captured (world size " +
          std::to_string(group_.world()) + "); drop --cuda-graphs under mpirun/srun");
    graphed_ = std::make_unique<GraphedStep>(*model_);
  }
  if (!cfg_.resume.empty()) {
    // The schedule and the checkpoint's step count are in optimizer steps, and its next batch
    // starts a group: another accumulation count would shift both.
    const int64_t saved_accum = checkpoint_config(cfg_.resume).accumulate_grad_batches;
    if (saved_accum != cfg_.accumulate_grad_batches)
      throw std::invalid_argument(
          "--resume " + cfg_.resume + ": the run used --accumulate-grad-batches " +
          std::to_string(saved_accum) + ", not " + std::to_string(cfg_.accumulate_grad_batches) +
          " (the schedule counts optimizer steps); resume with the same value");
    state_ = load_checkpoint(cfg_.resume, *model_, opt_.get(), scaler_->state());
    model_->refresh_working_parameters();
    if (main_)
      std::printf("resumed from %s at epoch %lld, batch %lld (step %lld)\n", cfg_.resume.c_str(),
                static_cast<long long>(state_.epoch + 1), static_cast<long long>(state_.next_batch),
                static_cast<long long>(state_.global_step));
  }
  if (world > 1) {
    comm_ = dist::make_communicator(cfg_.dist_backend, device_, group_);
    // Every rank starts from rank 0's weights and buffers (and optimizer state on resume).
    std::vector<Tensor*> shared;
    for (auto& [n, v] : model_->named_parameters()) shared.push_back(&const_cast<Variable&>(v).data());
    for (auto& [n, b] : model_->named_buffers()) shared.push_back(b);
    for (auto& [n, st] : opt_->state()) shared.push_back(st);
    for (auto& [n, st] : scaler_->state()) shared.push_back(st);
    dist::broadcast_tensors(*comm_, shared);
    model_->refresh_working_parameters();
    dist::ReducerOptions ro;
    ro.bucket_cap_mb = cfg_.bucket_cap_mb;
    ro.overlap = cfg_.overlap;
    // The variables backward gives gradients to: fp16/bf16 working copies under mixed
    // precision (half the bytes to allreduce), the float32 parameters otherwise.
    auto grad_owners = model_->named_parameters();
    const auto working = model_->working_parameters();
    for (size_t i = 0; i < grad_owners.size(); ++i)
      if (working[i].defined()) grad_owners[i].second = working[i];
    reducer_ = std::make_unique<dist::Reducer>(grad_owners, *comm_, ro);
    if (cfg_.sync_bn) {
      int layers = 0;
      std::vector<Module*> stack{model_.get()};
      while (!stack.empty()) {
        Module* m = stack.back();
        stack.pop_back();
        if (auto* bn = dynamic_cast<BatchNorm2d*>(m)) {
          bn->set_sync([this](Tensor& t) { comm_->allreduce_sum(t); }, world);
          ++layers;
        }
        for (auto& [n, c] : m->children()) stack.push_back(c.get());
      }
      if (main_)
        std::printf("sync batch norm: %d layer(s) normalise with the global batch's statistics\n",
                    layers);
    }
    if (main_)
      std::printf("data parallel: world size %d on %d node(s), backend %s, %zu gradient bucket(s) "
                  "of <= %.0f MB, overlap %s; batch %lld per rank, %lld in all; lr %g%s\n",
                  world, group_.nodes(), comm_->name(), reducer_->bucket_count(),
                  cfg_.bucket_cap_mb, cfg_.overlap ? "on" : "off",
                  static_cast<long long>(cfg_.batch_size),
                  static_cast<long long>(cfg_.batch_size * world), cfg_.lr,
                  cfg_.lr_scale == "linear" ? " (scaled linearly)" : "");
  }
}

Trainer::~Trainer() = default;

void Trainer::allreduce(Tensor& t) {
  if (comm_) comm_->allreduce_sum(t);
}

int Trainer::stop_requested() {
  const double local = static_cast<double>(g_stop_signal.load());
  // All ranks must stop at the same step, or one would wait forever in the next allreduce.
  return static_cast<int>(group_.world() > 1 ? dist::allreduce_host(group_, local, true) : local);
}

EvalResult Trainer::evaluate(const io::Dataset& ds, int64_t max_batches) {
  EvalResult r;
  r.confusion = io::ConfusionMatrix(ds.num_classes, ds.class_names);
  if (ds.count == 0 || max_batches == 0) return r;
  autograd::NoGradGuard no_grad;
  model_->eval();
  io::LoaderOptions lo;
  lo.batch_size = cfg_.batch_size;
  lo.shuffle = false;
  lo.workers = cfg_.workers;
  lo.limit_batches = max_batches;
  lo.device = device_;
  lo.dtype = compute_dtype(precision_);
  lo.rank = group_.rank();
  lo.world = group_.world();
  lo.pad = false;  // every sample counted once across ranks: exact global metrics
  io::Loader loader(ds, lo);
  loader.start_epoch(0);
  Tensor loss_sum = Tensor::zeros({}, DType::kFloat32, device_);
  Tensor counts = Tensor::zeros({ds.num_classes, ds.num_classes}, DType::kInt64, device_);
  while (auto b = loader.next()) {
    Variable logits = (*model_)(Variable(b->images));
    Variable loss = autograd::cross_entropy(logits, b->labels, cfg_.label_smoothing);
    t::axpy_(static_cast<double>(b->labels.numel()), loss.data(), loss_sum);
    t::confusion_update_(t::max_dim(logits.data(), 1).second, b->labels, counts);
    r.samples += b->labels.numel();
  }
  model_->train();
  Tensor n = Tensor::full({}, static_cast<double>(r.samples), DType::kFloat32, device_);
  allreduce(loss_sum);
  allreduce(counts);
  allreduce(n);
  r.samples = static_cast<int64_t>(n.item());
  r.loss = loss_sum.item() / static_cast<double>(std::max<int64_t>(r.samples, 1));
  r.confusion = to_matrix(counts, ds);
  return r;
}

FitResult Trainer::fit() {
  const auto t_start = Clock::now();
  const bool dev_run = cfg_.fast_dev_run > 0;
  const int64_t epochs = dev_run ? 1 : cfg_.epochs;
  io::LoaderOptions lo;
  lo.batch_size = cfg_.batch_size;
  lo.shuffle = cfg_.overfit_batches == 0;
  lo.seed = cfg_.seed;
  lo.workers = cfg_.workers;
  lo.prefetch = cfg_.prefetch;
  lo.device = device_;
  lo.dtype = compute_dtype(precision_);
  lo.rank = group_.rank();
  lo.world = group_.world();
  // Training augmentation: random 4-pixel-padded crops and flips for CIFAR-10 by default
  // (evaluation only normalizes).
  const bool crop_flip =
      cfg_.augment == "crop-flip" || (cfg_.augment == "auto" && cfg_.dataset == "cifar10");
  lo.augment_pad = crop_flip ? 4 : 0;
  lo.augment_flip = crop_flip;
  io::Loader probe(data_.train, lo);
  const int64_t all_batches = probe.num_batches();
  lo.limit_batches = dev_run ? std::min(cfg_.fast_dev_run, all_batches)
                             : limit_batches(cfg_.limit_train_batches, all_batches,
                                             "--limit-train-batches");
  io::Loader loader(data_.train, lo);
  const int64_t steps_per_epoch = loader.num_batches();
  const int64_t val_batches = dev_run ? cfg_.fast_dev_run : -1;
  const int64_t val_limit =
      dev_run ? val_batches
              : limit_batches(cfg_.limit_val_batches,
                              (data_.val.count + cfg_.batch_size - 1) / cfg_.batch_size,
                              "--limit-val-batches");

  // Batches between validations within an epoch (>= steps_per_epoch: only at its end).
  const int64_t val_every = std::max<int64_t>(
      1, limit_batches(cfg_.val_check_interval, steps_per_epoch, "--val-check-interval"));

  ScheduleConfig sc;
  sc.name = cfg_.lr_schedule;
  sc.base_lr = cfg_.lr;
  // Optimizer steps: one per accumulate_grad_batches batches, and one for an epoch's last,
  // shorter group (Lightning steps at the end of the epoch too).
  const int64_t accum = cfg_.accumulate_grad_batches;
  const int64_t opt_steps_per_epoch = (steps_per_epoch + accum - 1) / accum;
  sc.total_steps = std::max<int64_t>(1, opt_steps_per_epoch * epochs);
  sc.steps_per_epoch = std::max<int64_t>(1, opt_steps_per_epoch);
  sc.step_epochs = cfg_.lr_step_epochs;
  sc.gamma = cfg_.lr_gamma;
  sc.warmup_steps = cfg_.warmup_steps;
  sc.min_lr = cfg_.min_lr;
  check_schedule(sc);

  FitResult res;
  std::unique_ptr<io::CsvLogger> csv;
  std::unique_ptr<io::EventWriter> tb;
  if (!dev_run && main_) {
    dir_ = make_version_dir(cfg_.log_dir, cfg_.experiment_name);
    res.version_dir = dir_;
    nlohmann::json hp;
    hp["config"] = to_json(cfg_);
    hp["machine"] = machine_info(device_.str(), command_line_);
    hp["data"] = {{"train", data_.train.count}, {"val", data_.val.count}, {"test", data_.test.count}};
    std::ofstream(dir_ + "/hparams.json") << hp.dump(2) << "\n";
    csv = std::make_unique<io::CsvLogger>(dir_ + "/metrics.csv", kCsvColumns);
    tb = std::make_unique<io::EventWriter>(dir_);
    std::printf("logging to %s\n", dir_.c_str());
  } else if (main_) {
    std::printf("fast_dev_run: %lld batch(es), no logs or checkpoints\n",
                static_cast<long long>(cfg_.fast_dev_run));
  }
  if (main_)
    std::printf("model %s on %s: %lld parameters; %lld training batches of %lld per epoch\n%s",
              cfg_.arch.c_str(), device_.str().c_str(),
              static_cast<long long>(model_->parameter_count()),
              static_cast<long long>(steps_per_epoch), static_cast<long long>(cfg_.batch_size),
              model_summary(*model_).c_str());
  if (main_ && accum > 1)
    std::printf("accumulating the gradients of %lld batches per optimizer step: an effective "
                "batch of %lld, %lld optimizer steps per epoch\n",
                static_cast<long long>(accum),
                static_cast<long long>(accum * cfg_.batch_size * group_.world()),
                static_cast<long long>(opt_steps_per_epoch));
  if (main_ && precision_ != Precision::kFloat32)
    std::printf("mixed precision (--precision %s): %s working weights and activations, float32 "
                "master weights and batch norm%s%s\n",
                precision_name(precision_), precision_ == Precision::kFloat16 ? "fp16" : "bf16",
                scaler_->enabled() ? ", dynamic loss scaling from 65536" : ", no loss scaling",
                device_.is_cpu() ? " (on the CPU: float arithmetic on fp16/bf16 storage, for "
                                   "testing; slower than --precision 32)"
                                 : "");
  std::fflush(stdout);

  auto save = [&](const std::string& name) {
    if (dev_run || !main_) return;
    // The exact count of steps taken (the step loop knows it one step late).
    opt_->set_step_count(state_.global_step - scaler_->skipped_steps());
    save_checkpoint(dir_ + "/checkpoints/" + name, *model_, opt_.get(), state_, cfg_,
                    scaler_->state());
  };

  StepScalars step_log(device_, cfg_.log_every_n_steps > 0 ? tb.get() : nullptr);
  // --val-check-interval: validation within the epoch, on the global metrics (every rank
  // evaluates its shard), logged to TensorBoard at the step, best.h5 when it improves.
  // Evaluation uses no generator and changes no state, so training goes on exactly as without.
  auto validate_within_epoch = [&](int64_t epoch, int64_t b) {
    EvalResult v;
    {
      Profiler::Scope s(profiler_, "validation");
      v = evaluate(data_.val, val_limit);
    }
    if (v.samples == 0) return;
    const double acc = v.confusion.accuracy();
    if (main_) {
      std::printf("validation at epoch %lld, batch %lld (step %lld): loss %.4f    accuracy %.4f\n",
                  static_cast<long long>(epoch + 1), static_cast<long long>(b + 1),
                  static_cast<long long>(state_.global_step), v.loss, acc);
      std::fflush(stdout);
    }
    if (tb) {
      tb->add_scalar("val/loss", static_cast<float>(v.loss), state_.global_step);
      tb->add_scalar("val/accuracy", static_cast<float>(acc), state_.global_step);
      tb->flush();
    }
    if (acc > state_.best_val_accuracy) {
      state_.best_val_accuracy = acc;
      state_.epoch = epoch;  // in progress: best.h5 resumes at next_batch like last.h5
      save("best.h5");
    }
  };
  model_->train();
  const int num_classes = data_.train.num_classes;
  // Testing the failure paths: the rank named by MLAI_FAULT_RANK throws at step 2 (or at
  // MLAI_FAULT_STEP), or with MLAI_FAULT_KIND=hang stops there for good (a stuck rank: the
  // others' deadlines must end it).
  int64_t fault_step = 0;
  if (const char* f = std::getenv("MLAI_FAULT_RANK"); f && std::atoi(f) == group_.rank()) {
    const char* at = std::getenv("MLAI_FAULT_STEP");
    fault_step = at != nullptr ? std::max(1, std::atoi(at)) : 2;
  }
  const char* fault_kind = std::getenv("MLAI_FAULT_KIND");
  const bool fault_hang = fault_kind && std::string(fault_kind) == "hang";
  for (int64_t epoch = state_.epoch; epoch < epochs; ++epoch) {
    const auto t_epoch = Clock::now();
    const double wait_before = profiler_.total("data wait");
    loader.start_epoch(epoch, state_.next_batch);
    const int64_t first = state_.next_batch;
    const bool val_epoch = (epoch + 1) % cfg_.check_val_every_n_epoch == 0 || epoch + 1 == epochs;
    int64_t next_val = (first / val_every + 1) * val_every;  // the next batch count to validate at
    Tensor loss_sum = Tensor::zeros({}, DType::kFloat32, device_);
    Tensor counts = Tensor::zeros({num_classes, num_classes}, DType::kInt64, device_);
    int64_t samples = 0;
    char label[64];
    std::snprintf(label, sizeof(label), "epoch %02lld/%02lld", static_cast<long long>(epoch + 1),
                  static_cast<long long>(epochs));
    ProgressLine progress(cfg_.progress && main_, label, steps_per_epoch);
    LaggedMean running_loss(device_);
    const Tensor inv_accum =
        Tensor::full({}, 1.0 / static_cast<double>(accum), DType::kFloat32, device_);
    double lr = opt_->lr();
    for (int64_t b = first;; ++b) {
      std::optional<io::Batch> batch;
      {
        Profiler::Scope s(profiler_, "data wait");
        batch = loader.next();
      }
      if (!batch) break;
      group_.abort_if_requested();  // the NCCL watchdog found a dead or hung peer
      // Under accumulation only a group's last batch steps (and, with data parallelism,
      // allreduces); the others add into the gradients.
      const bool step_now = (b + 1) % accum == 0 || b + 1 >= steps_per_epoch;
      if (reducer_ && accum > 1) reducer_->prepare_backward(step_now);
      Tensor logits, loss;
      // forward, loss and backward (seeded with the loss scale: small fp16 gradients stay
      // normal); under --cuda-graphs they start by zeroing the gradients, and run as one
      // replayed graph once warm.
      auto forward_backward = [&](const Tensor& images, const Tensor& labels) {
        if (graphed_) opt_->zero_grad();
        Variable out, l;
        {
          Profiler::Scope s(profiler_, "forward");
          out = (*model_)(Variable(images));
          l = autograd::cross_entropy(out, labels, cfg_.label_smoothing);
        }
        {
          Profiler::Scope s(profiler_, "backward");
          if (accum > 1) {  // Lightning's loss / accumulate_grad_batches, in the seed
            l.backward(scaler_->enabled() ? t::scale(scaler_->seed(), 1.0 / static_cast<double>(accum))
                                          : inv_accum);
          } else if (scaler_->enabled()) {
            l.backward(scaler_->seed());
          } else {
            l.backward();
          }
        }
        return std::pair<Tensor, Tensor>(out.data(), l.data());
      };
      if (graphed_ && graphed_->run(batch->images, batch->labels, forward_backward)) {
        logits = graphed_->logits();
        loss = graphed_->loss();
      } else {
        std::tie(logits, loss) = forward_backward(batch->images, batch->labels);
      }
      if (reducer_ && step_now) {
        Profiler::Scope s(profiler_, "gradient sync");
        reducer_->finish();  // buckets hold the sums over ranks
      }
      if (step_now) {
        Profiler::Scope s(profiler_, "optimizer step");
        lr = lr_at(sc, state_.global_step);
        opt_->set_lr(lr);
        // The mean over ranks; under fp16 also 1/scale, skipped on the device on overflow.
        scaled_step(*opt_, *scaler_, 1.0f / static_cast<float>(group_.world()),
                    state_.global_step,
                    cfg_.gradient_clip_algorithm == "norm" ? cfg_.gradient_clip_val : 0.0);
        if (reducer_) {
          reducer_->zero_grad();
        } else if (!graphed_) {  // (graphed steps zero the gradients at their start)
          opt_->zero_grad();
        }
      }
      if (step_now && fault_step > 0 && state_.global_step + 1 == fault_step) {
        while (fault_hang) std::this_thread::sleep_for(std::chrono::seconds(1));
        throw std::runtime_error("fault injected by MLAI_FAULT_RANK at step " + std::to_string(fault_step));
      }
      const int64_t rows = batch->labels.numel();
      t::axpy_(static_cast<double>(rows), loss, loss_sum);
      t::confusion_update_(t::max_dim(logits, 1).second, batch->labels, counts);
      samples += rows;
      if (step_now && ++state_.global_step % std::max<int64_t>(cfg_.log_every_n_steps, 1) == 0)
        step_log.record(state_.global_step, loss, lr);
      state_.next_batch = b + 1;
      const double el = seconds_since(t_epoch);
      // The running loss, read only when the line is redrawn, and on a GPU a few steps late.
      progress.update(b + 1, [&] { return running_loss.read(loss_sum, samples); },
                      el > 0 ? samples / el : 0);
      if (!step_now) continue;  // a stop waits for the group's step: nothing half-accumulated
      if (cfg_.checkpoint_every_n_steps > 0 &&
          state_.global_step % cfg_.checkpoint_every_n_steps == 0) {
        state_.epoch = epoch;  // in progress: a resume continues at next_batch
        save("last.h5");
      }
      if (val_epoch && b + 1 >= next_val && b + 1 < steps_per_epoch) {
        next_val = ((b + 1) / val_every + 1) * val_every;
        progress.finish();
        validate_within_epoch(epoch, b);
      }
      if (const int sig = stop_requested()) {
        progress.finish();
        step_log.flush();
        state_.epoch = epoch;
        save("last.h5");
        if (main_)
          std::printf("stopped by signal %d at epoch %lld, batch %lld: %s\n", sig,
                    static_cast<long long>(epoch + 1), static_cast<long long>(b + 1),
                    dev_run ? "fast_dev_run, nothing saved"
                            : ("checkpoint saved to " + dir_ + "/checkpoints/last.h5").c_str());
        res.stop_signal = sig;
        g_stop_signal.store(0);  // consumed: a later fit() in this process runs normally
        res.global_step = state_.global_step;
        res.epochs_completed = epoch;
        return res;
      }
    }
    progress.finish();
    step_log.flush();
    Tensor n = Tensor::full({}, static_cast<double>(samples), DType::kFloat32, device_);
    allreduce(loss_sum);
    allreduce(counts);
    allreduce(n);
    samples = static_cast<int64_t>(n.item());
    const double train_seconds = seconds_since(t_epoch);
    const double train_loss = loss_sum.item() / static_cast<double>(std::max<int64_t>(samples, 1));
    const io::ConfusionMatrix train_cm = to_matrix(counts, data_.train);
    EvalResult val;
    if (val_epoch) {  // --check-val-every-n-epoch
      Profiler::Scope s(profiler_, "validation");
      val = evaluate(data_.val, val_limit);
    }
    // An epoch that skipped its validation changes neither best.h5 nor early stopping.
    const bool validated = val_epoch || data_.val.count == 0;
    const double epoch_seconds = seconds_since(t_epoch);
    const double wait_frac = (profiler_.total("data wait") - wait_before) / std::max(train_seconds, 1e-9);
    const double ips = samples / std::max(train_seconds, 1e-9);
    const double loss_scale = scaler_->enabled() ? scaler_->scale() : 1.0;
    const int64_t skipped = scaler_->enabled() ? scaler_->skipped_steps() : 0;
    res.loss_scale = loss_scale;
    res.skipped_steps = skipped;
    if (main_) {
      std::printf("epoch: %02lld/%02lld    training loss: %.4f    training accuracy %.4f",
                  static_cast<long long>(epoch + 1), static_cast<long long>(epochs), train_loss,
                  train_cm.accuracy());
      if (val.samples > 0)
        std::printf("    validation loss: %.4f    validation accuracy: %.4f", val.loss,
                    val.confusion.accuracy());
      if (scaler_->enabled())
        std::printf("    loss scale: %g    skipped steps: %lld", loss_scale,
                    static_cast<long long>(skipped));
      std::printf("    time: %.1fs    images/s: %.0f\n", epoch_seconds, ips);
      std::fflush(stdout);
    }
    res.last_train_loss = train_loss;
    res.val = val;
    state_.epoch = epoch + 1;
    state_.next_batch = 0;
    // Early stopping on the global validation metrics: every rank decides the same.
    bool stop_early = false;
    if (cfg_.early_stopping_patience > 0 && !dev_run && validated) {
      const bool lower = cfg_.early_stopping_monitor == "val_loss";
      const double v = lower ? val.loss : val.confusion.accuracy();
      double& best = state_.early_stopping_best;
      const double d = cfg_.early_stopping_min_delta;
      if (std::isnan(best) || (lower ? v < best - d : v > best + d)) {
        best = v;
        state_.early_stopping_wait = 0;
      } else if (++state_.early_stopping_wait >= cfg_.early_stopping_patience) {
        stop_early = true;
        res.early_stopped = true;
      }
    }
    if (!dev_run && main_) {
      csv->log({{"epoch", epoch + 1}, {"step", state_.global_step}, {"lr", lr},
                {"train_loss", train_loss}, {"train_accuracy", train_cm.accuracy()},
                {"val_loss", val.samples ? val.loss : 0.0},
                {"val_accuracy", val.confusion.accuracy()},
                {"val_precision", val.confusion.macro_precision()},
                {"val_recall", val.confusion.macro_recall()}, {"val_f1", val.confusion.macro_f1()},
                {"images_per_sec", ips}, {"epoch_seconds", epoch_seconds},
                {"data_wait_fraction", wait_frac}, {"loss_scale", loss_scale},
                {"skipped_steps", skipped}, {"val_confusion", confusion_json(val.confusion)}});
      for (auto [tag, v] : {std::pair{"train/loss", train_loss},
                            {"train/accuracy", train_cm.accuracy()}, {"lr", lr},
                            {"images_per_sec", ips}, {"data_wait_fraction", wait_frac}})
        tb->add_scalar(tag, static_cast<float>(v), state_.global_step);
      if (scaler_->enabled()) {
        tb->add_scalar("train/loss_scale", static_cast<float>(loss_scale), state_.global_step);
        tb->add_scalar("train/skipped_steps", static_cast<float>(skipped), state_.global_step);
      }
      if (val.samples > 0) {
        tb->add_scalar("val/loss", static_cast<float>(val.loss), state_.global_step);
        tb->add_scalar("val/accuracy", static_cast<float>(val.confusion.accuracy()), state_.global_step);
      }
      tb->flush();
      const bool periodic = cfg_.checkpoint_every > 0 && (epoch + 1) % cfg_.checkpoint_every == 0;
      const double score = val.samples > 0 ? val.confusion.accuracy() : train_cm.accuracy();
      if (periodic || epoch + 1 == epochs || stop_early) {
        if (validated && score > state_.best_val_accuracy) {
          state_.best_val_accuracy = score;
          save("best.h5");
        }
        save("last.h5");
      }
    }
    if (stop_early) {
      if (main_)
        std::printf("early stopping after epoch %lld: %s has not improved by more than %g for %lld "
                    "epoch(s) (best %.4f)\n",
                    static_cast<long long>(epoch + 1), cfg_.early_stopping_monitor.c_str(),
                    cfg_.early_stopping_min_delta,
                    static_cast<long long>(state_.early_stopping_wait), state_.early_stopping_best);
      break;
    }
  }
  res.epochs_completed = state_.epoch;
  res.global_step = state_.global_step;

  {
    Profiler::Scope s(profiler_, "test");
    res.test = evaluate(data_.test,
                        dev_run ? cfg_.fast_dev_run
                                : limit_batches(cfg_.limit_test_batches,
                                                (data_.test.count + cfg_.batch_size - 1) /
                                                    cfg_.batch_size,
                                                "--limit-test-batches"));
  }
  if (res.test.samples > 0 && main_) {
    const auto& cm = res.test.confusion;
    std::printf("test loss: %.4f    test accuracy: %.4f    macro precision: %.4f    macro recall: "
                "%.4f    macro F1: %.4f    (%lld images)\n%s",
                res.test.loss, cm.accuracy(), cm.macro_precision(), cm.macro_recall(),
                cm.macro_f1(), static_cast<long long>(res.test.samples), cm.report().c_str());
    std::printf("test confusion matrix (rows: true class, columns: predicted)\n%s",
                cm.to_string().c_str());
    if (csv)
      csv->log({{"epoch", "test"}, {"step", state_.global_step}, {"test_loss", res.test.loss},
                {"test_accuracy", cm.accuracy()}, {"test_precision", cm.macro_precision()},
                {"test_recall", cm.macro_recall()}, {"test_f1", cm.macro_f1()},
                {"test_confusion", confusion_json(cm)}});
  }
  if (main_) std::printf("%s", profiler_.report(seconds_since(t_start)).c_str());
  return res;
}

}  // namespace mlai::nn
