// Learning-rate schedules as pure functions of the global step (so a resumed run gets exactly
// the same rates): constant, step, multistep (PyTorch MultiStepLR: x gamma at each milestone
// epoch), exponential (ExponentialLR: x gamma every epoch), cosine, warmup_cosine, onecycle
// (PyTorch OneCycleLR, cosine annealing, two phases). The epoch-wise ones change the rate at
// epoch boundaries, as PyTorch's do stepped once an epoch (Lightning's interval "epoch").
// linear and polynomial decay from base_lr to min_lr over the run (PyTorch's LinearLR and
// PolynomialLR, or with warmup_steps Hugging Face's get_linear_schedule_with_warmup and
// get_polynomial_decay_schedule_with_warmup: a ramp, then the decay over the steps left). And
// plateau, PyTorch's ReduceLROnPlateau, which follows a validation metric: its state
// (PlateauState) travels in checkpoints instead. cosine_restarts is PyTorch's
// CosineAnnealingWarmRestarts (SGDR, Loshchilov and Hutter) stepped every batch with the
// fractional epoch, `scheduler.step(epoch + i / iters)` as its documentation shows: cosine from
// base_lr to min_lr over restart_epochs epochs, then again over restart_mult times as many...
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace mlai::nn {

struct ScheduleConfig {
  std::string name = "constant";
  double base_lr = 0.01;        // the peak rate for onecycle
  int64_t total_steps = 1;      // cosine/onecycle horizon
  int64_t steps_per_epoch = 1;  // step schedule counts epochs
  // The optimizer step each epoch starts at, when epochs take different numbers of steps
  // (--accumulation-schedule); empty: epoch e starts at e x steps_per_epoch.
  std::vector<int64_t> epoch_starts;
  int64_t step_epochs = 30;     // step: decay every this many epochs
  std::vector<int64_t> milestones;  // multistep: the epochs (counted from 0) the rate decays at
  double gamma = 0.1;           // step, multistep, exponential: decay factor
  double min_lr = 0.0;          // cosine/warmup_cosine floor; linear/polynomial end
  double power = 1.0;           // polynomial: (1 - progress)^power
  int64_t restart_epochs = 10;  // cosine_restarts: T_0, the first cycle's epochs
  int64_t restart_mult = 1;     // cosine_restarts: T_mult, each cycle this many times longer
  // warmup_cosine, linear, polynomial: a linear ramp from base_lr/warmup_steps to base_lr,
  // then the decay over the rest. constant, step, multistep, exponential, cosine and
  // cosine_restarts: the schedule's rate times
  // (step + 1)/warmup_steps over the first warmup_steps (the gradual warmup of Goyal et al.'s
  // large-batch recipe, beside --lr-scale linear). 0: none.
  int64_t warmup_steps = 0;
  double pct_start = 0.3, div_factor = 25.0, final_div_factor = 1e4;  // onecycle
};

// Validates the config (unknown name, non-positive horizon...) with a clear message.
void check_schedule(const ScheduleConfig& c);
// The rate at optimizer step `step` (plateau: base_lr, the rate before any reduction).
double lr_at(const ScheduleConfig& c, int64_t step);

// torch.optim.lr_scheduler.ReduceLROnPlateau with threshold_mode "rel": after `patience`
// validations in a row that do not beat the best by the relative `threshold`, the rate is
// multiplied by `factor` (not below min_lr), and `cooldown` validations follow in which
// nothing counts as bad.
struct PlateauConfig {
  bool maximize = false;  // mode "max" (accuracy) rather than "min" (loss)
  double factor = 0.1;
  int64_t patience = 10;
  double threshold = 1e-4;
  int64_t cooldown = 0;
  double min_lr = 0.0;
};
struct PlateauState {
  double lr = 0;  // the current rate (0: not started, base_lr)
  double best = std::numeric_limits<double>::quiet_NaN();  // NaN: no validation yet
  int64_t bad = 0;            // validations since the last improvement (num_bad_epochs)
  int64_t cooldown_left = 0;  // cooldown_counter
};
// One validation's metric; returns true when it lowered s.lr.
bool plateau_step(const PlateauConfig& c, PlateauState& s, double metric);

// torch.optim.swa_utils.SWALR as Lightning's StochasticWeightAveraging steps it (once per
// epoch): the rate of the k-th SWA epoch (k = 0 the first), annealed from lr0 (the rate when SWA
// began) to swa_lr over anneal_epochs epochs, by cos ((1 - cos(pi t)) / 2) or linearly, then
// swa_lr.
double swa_lr_at(double lr0, double swa_lr, int64_t k, int64_t anneal_epochs, bool cos);

}  // namespace mlai::nn
