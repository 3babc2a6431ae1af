// Learning-rate schedules as pure functions of the global step (so a resumed run gets exactly
// the same rates): constant, step, cosine, warmup_cosine, onecycle (PyTorch OneCycleLR,
// cosine annealing, two phases).
#pragma once

#include <cstdint>
#include <string>

namespace mlai::nn {

struct ScheduleConfig {
  std::string name = "constant";
  double base_lr = 0.01;        // the peak rate for onecycle
  int64_t total_steps = 1;      // cosine/onecycle horizon
  int64_t steps_per_epoch = 1;  // step schedule counts epochs
  int64_t step_epochs = 30;     // step: decay every this many epochs
  double gamma = 0.1;           // step: decay factor
  double min_lr = 0.0;          // cosine/warmup_cosine floor
  int64_t warmup_steps = 0;     // warmup_cosine: linear ramp from base_lr/warmup_steps
  double pct_start = 0.3, div_factor = 25.0, final_div_factor = 1e4;  // onecycle
};

// Validates the config (unknown name, non-positive horizon...) with a clear message.
void check_schedule(const ScheduleConfig& c);
double lr_at(const ScheduleConfig& c, int64_t step);

}  // namespace mlai::nn
