// The step plan (see trainer.h): how many optimizer steps each epoch takes and the learning-rate
// schedule over them, and where a resumed run stands in that schedule.
#include <algorithm>
#include <cstdio>
#include <string>

#include "io/loader.h"
#include "nn/trainer.h"

namespace mlai::nn {

Trainer::StepPlan Trainer::plan_steps(int64_t steps_per_epoch, int64_t max_steps,
                                      bool dev_run) const {
  StepPlan plan;
  // Optimizer steps: one per accumulation group of an epoch's batches (--accumulate-grad-batches,
  // or the epoch's count in --accumulation-schedule), and one for its last, shorter group
  // (Lightning steps at the end of the epoch too).
  auto opt_steps_in = [&](int64_t epoch) {
    const int64_t a = accumulation_at(cfg_, epoch);
    return std::max<int64_t>(1, (steps_per_epoch + a - 1) / a);
  };
  plan.epochs = dev_run ? 1 : cfg_.epochs;
  if (plan.epochs <= 0) {  // --epochs -1: as many as --max-steps needs
    plan.epochs = 0;
    for (int64_t steps = 0; steps < max_steps; steps += opt_steps_in(plan.epochs)) ++plan.epochs;
  }
  plan.epoch_starts = {0};
  for (int64_t e = 0; e < plan.epochs; ++e)
    plan.epoch_starts.push_back(plan.epoch_starts.back() + opt_steps_in(e));
  // The schedule spans the steps training will take (Lightning's estimated_stepping_batches).
  ScheduleConfig& sc = plan.schedule;
  sc.name = cfg_.lr_schedule;
  sc.base_lr = cfg_.lr;
  sc.total_steps = std::max<int64_t>(1, plan.epoch_starts.back());
  if (max_steps > 0) sc.total_steps = std::min(sc.total_steps, max_steps);
  sc.steps_per_epoch = opt_steps_in(0);
  if (!cfg_.accumulation_schedule.empty()) sc.epoch_starts = plan.epoch_starts;
  sc.step_epochs = cfg_.lr_step_epochs;
  sc.milestones = cfg_.lr_milestones;
  sc.gamma = cfg_.lr_gamma;
  sc.warmup_steps = cfg_.warmup_steps;
  sc.min_lr = cfg_.min_lr;
  sc.power = cfg_.lr_power;
  sc.restart_epochs = cfg_.lr_restart_epochs;
  sc.restart_mult = cfg_.lr_restart_mult;
  check_schedule(sc);
  return plan;
}

void Trainer::reanchor_schedule(const io::Loader& loader, const ScheduleConfig& sc,
                                int64_t epoch_start) {
  // The epoch's batches still to run, in this run's ranks and batch size, keep the epoch's
  // numbering (Loader::first_batch_at): the optimizer steps before the first of them are where
  // a run on this geometry throughout would be, and the schedule continues from there.
  // global_step keeps counting the steps taken (TensorBoard's axis, --max-steps).
  const int64_t accum = accumulation_at(cfg_, state_.epoch);
  const int64_t first = loader.first_batch_at(state_.epoch_samples);
  const int64_t step = epoch_start + first / accum;
  state_.schedule_shift = step - state_.global_step;
  if (!main_) return;
  const auto [world, batch, saved_accum] = resumed_geometry_;
  auto accumulating = [](int64_t n) {
    return n > 1 ? " (accumulating " + std::to_string(n) + ")" : std::string();
  };
  std::printf("resumed on %d rank(s) x batch %lld%s from a run on %lld x %lld%s: ", group_.world(),
              static_cast<long long>(cfg_.batch_size), accumulating(accum).c_str(),
              static_cast<long long>(world), static_cast<long long>(batch),
              accumulating(saved_accum).c_str());
  if (state_.epoch_samples > 0)
    std::printf("epoch %lld continues after %lld of its %lld samples, at batch %lld of %lld",
                static_cast<long long>(state_.epoch + 1),
                static_cast<long long>(state_.epoch_samples),
                static_cast<long long>(data_.train.count), static_cast<long long>(first),
                static_cast<long long>(loader.num_batches()));
  else
    std::printf("epoch %lld starts, in %lld batches", static_cast<long long>(state_.epoch + 1),
                static_cast<long long>(loader.num_batches()));
  // (ReduceLROnPlateau and SWA's rates follow validations and epochs, not steps.)
  if (sc.name != "constant" && sc.name != "plateau")
    std::printf("; the %s schedule continues at its step %lld of %lld", sc.name.c_str(),
                static_cast<long long>(step), static_cast<long long>(sc.total_steps));
  std::printf("\n");
  if (accum > 1 && first % accum != 0)
    std::printf("note: the epoch resumes inside a group of --accumulate-grad-batches %lld: its "
                "first optimizer step accumulates %lld batch(es)\n",
                static_cast<long long>(accum), static_cast<long long>(accum - first % accum));
  std::fflush(stdout);
}

}  // namespace mlai::nn
