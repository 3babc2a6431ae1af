// Learning-rate schedules (see lr_schedule.h).
#include "nn/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace mlai::nn {

namespace {
constexpr double kPi = 3.14159265358979323846;
// Cosine from `start` (pct = 0) to `end` (pct = 1).
double cos_anneal(double start, double end, double pct) {
  return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1.0);
}
}  // namespace

void check_schedule(const ScheduleConfig& c) {
  const std::string& n = c.name;
  if (n != "constant" && n != "step" && n != "multistep" && n != "exponential" && n != "cosine" &&
      n != "warmup_cosine" && n != "onecycle" && n != "plateau" && n != "linear" &&
      n != "polynomial" && n != "cosine_restarts")
    throw std::invalid_argument("unknown lr schedule '" + n +
                                "' (expected constant, step, multistep, exponential, cosine, "
                                "cosine_restarts, warmup_cosine, onecycle, linear, polynomial "
                                "or plateau)");
  if (n == "cosine_restarts" && c.restart_epochs < 1)
    throw std::invalid_argument("--lr-restart-epochs must be >= 1 (epochs of the first cycle)");
  if (n == "cosine_restarts" && c.restart_mult < 1)
    throw std::invalid_argument("--lr-restart-mult must be an integer >= 1");
  if (n == "cosine_restarts" && c.steps_per_epoch < 1)
    throw std::invalid_argument("lr schedule cosine_restarts: steps per epoch must be >= 1");
  if (n == "polynomial" && !(c.power > 0 && std::isfinite(c.power)))
    throw std::invalid_argument("--lr-power must be > 0 (1: linear decay; 2: quadratic)");
  if ((n == "multistep" || n == "exponential") && c.steps_per_epoch < 1)
    throw std::invalid_argument("lr schedule " + n + ": steps per epoch must be >= 1");
  if (n == "multistep") {
    if (c.milestones.empty())
      throw std::invalid_argument("lr schedule multistep needs --lr-milestones (epochs, e.g. 30,60,80)");
    for (size_t i = 0; i < c.milestones.size(); ++i)
      if (c.milestones[i] < 1 || (i > 0 && c.milestones[i] <= c.milestones[i - 1]))
        throw std::invalid_argument("--lr-milestones must be increasing epochs >= 1, got " +
                                    std::to_string(c.milestones[i]) + " at position " +
                                    std::to_string(i + 1));
  }
  if (c.total_steps < 1) throw std::invalid_argument("lr schedule: total steps must be >= 1");
  if (n == "step" && (c.step_epochs < 1 || c.steps_per_epoch < 1))
    throw std::invalid_argument("lr schedule step: --lr-step-epochs must be >= 1");
  if (c.warmup_steps < 0 || (c.warmup_steps > 0 && c.warmup_steps >= c.total_steps))
    throw std::invalid_argument("--warmup-steps must be in [0, total steps = " +
                                std::to_string(c.total_steps) + ")");
  if (c.warmup_steps > 0 && (n == "onecycle" || n == "plateau"))
    throw std::invalid_argument("--warmup-steps does not apply to the " + n + " schedule" +
                                (n == "onecycle" ? " (its first phase is the warmup)" : ""));
  if (n == "onecycle" && (c.pct_start <= 0 || c.pct_start >= 1))
    throw std::invalid_argument("lr schedule onecycle: pct_start must be in (0, 1)");
}

namespace {
double scheduled(const ScheduleConfig& c, int64_t step);
// Schedules that ramp up themselves and then decay over the steps after the warmup.
bool has_own_warmup(const std::string& n) {
  return n == "warmup_cosine" || n == "linear" || n == "polynomial";
}
}  // namespace

double lr_at(const ScheduleConfig& c, int64_t step) {
  const double lr = scheduled(c, step);
  // The gradual warmup in front of any other step schedule (warmup_cosine has its own ramp).
  if (c.warmup_steps > 0 && step < c.warmup_steps && !has_own_warmup(c.name) &&
      c.name != "onecycle" && c.name != "plateau")
    return lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  return lr;
}

namespace {
// The epoch optimizer step `step` belongs to (the epoch-interval schedules step per epoch).
int64_t epoch_of(const ScheduleConfig& c, int64_t step) {
  if (c.epoch_starts.empty()) return step / c.steps_per_epoch;
  const auto after = std::upper_bound(c.epoch_starts.begin(), c.epoch_starts.end(), step);
  return std::max<int64_t>(after - c.epoch_starts.begin() - 1, 0);
}

// The epoch `step` is in, plus the share of that epoch's steps before it (each epoch's own
// length when epochs differ).
double fractional_epoch(const ScheduleConfig& c, int64_t step) {
  const int64_t epoch = epoch_of(c, step);
  const auto e = static_cast<size_t>(epoch);
  const int64_t first = c.epoch_starts.empty() ? epoch * c.steps_per_epoch : c.epoch_starts[e];
  const int64_t len =
      e + 1 < c.epoch_starts.size() ? c.epoch_starts[e + 1] - first : c.steps_per_epoch;
  return static_cast<double>(epoch) +
         static_cast<double>(step - first) / static_cast<double>(std::max<int64_t>(len, 1));
}

double scheduled(const ScheduleConfig& c, int64_t step) {
  const double t = static_cast<double>(step), total = static_cast<double>(c.total_steps);
  if (c.name == "constant" || c.name == "plateau") return c.base_lr;
  if (c.name == "step") {
    const int64_t epoch = epoch_of(c, step);
    return c.base_lr * std::pow(c.gamma, static_cast<double>(epoch / c.step_epochs));
  }
  if (c.name == "multistep") {
    const int64_t epoch = epoch_of(c, step);
    const auto passed = std::upper_bound(c.milestones.begin(), c.milestones.end(), epoch) -
                        c.milestones.begin();
    return c.base_lr * std::pow(c.gamma, static_cast<double>(passed));
  }
  if (c.name == "exponential")
    return c.base_lr * std::pow(c.gamma, static_cast<double>(epoch_of(c, step)));
  if (c.name == "cosine") return cos_anneal(c.base_lr, c.min_lr, std::min(t / total, 1.0));
  if (c.name == "cosine_restarts") {
    // PyTorch's T_cur and T_i at the fractional epoch.
    const double e = fractional_epoch(c, step);
    const double t0 = static_cast<double>(c.restart_epochs);
    double t_cur = e, t_i = t0;
    if (e >= t0 && c.restart_mult == 1) {
      t_cur = std::fmod(e, t0);
    } else if (e >= t0) {
      const double m = static_cast<double>(c.restart_mult);
      const double n = std::floor(std::log(e / t0 * (m - 1) + 1) / std::log(m));
      t_cur = e - t0 * (std::pow(m, n) - 1) / (m - 1);
      t_i = t0 * std::pow(m, n);
    }
    return cos_anneal(c.base_lr, c.min_lr, t_cur / t_i);
  }
  if (c.name == "warmup_cosine") {
    const double w = static_cast<double>(c.warmup_steps);
    if (step < c.warmup_steps) return c.base_lr * (t + 1) / w;
    return cos_anneal(c.base_lr, c.min_lr, std::min((t - w) / std::max(total - w, 1.0), 1.0));
  }
  if (c.name == "linear" || c.name == "polynomial") {
    const double w = static_cast<double>(c.warmup_steps);
    if (step < c.warmup_steps) return c.base_lr * (t + 1) / w;
    const double left = 1.0 - std::min((t - w) / std::max(total - w, 1.0), 1.0);
    const double f = c.name == "linear" ? left : std::pow(left, c.power);
    return c.min_lr + (c.base_lr - c.min_lr) * f;
  }
  if (c.name == "onecycle") {
    const double initial = c.base_lr / c.div_factor, final_lr = initial / c.final_div_factor;
    const double up_end = c.pct_start * total - 1, down_end = total - 1;
    if (t <= up_end) return cos_anneal(initial, c.base_lr, up_end > 0 ? t / up_end : 1.0);
    return cos_anneal(c.base_lr, final_lr, std::min((t - up_end) / (down_end - up_end), 1.0));
  }
  check_schedule(c);
  return c.base_lr;
}
}  // namespace

double swa_lr_at(double lr0, double swa_lr, int64_t k, int64_t anneal_epochs, bool cos) {
  if (anneal_epochs == 0) k = std::max<int64_t>(k, 1);
  const double t = std::clamp(static_cast<double>(k) / static_cast<double>(std::max<int64_t>(anneal_epochs, 1)),
                              0.0, 1.0);
  const double alpha = cos ? (1.0 - std::cos(kPi * t)) / 2.0 : t;
  return swa_lr * alpha + lr0 * (1.0 - alpha);
}

bool plateau_step(const PlateauConfig& c, PlateauState& s, double metric) {
  // PyTorch starts best at +inf (min) or -inf (max); a NaN metric is never better.
  const double inf = std::numeric_limits<double>::infinity();
  const double best = std::isnan(s.best) ? (c.maximize ? -inf : inf) : s.best;
  const bool better = c.maximize ? metric > best * (1.0 + c.threshold)
                                 : metric < best * (1.0 - c.threshold);
  if (better) {
    s.best = metric;
    s.bad = 0;
  } else {
    ++s.bad;
  }
  if (s.cooldown_left > 0) {
    --s.cooldown_left;
    s.bad = 0;  // bad validations are ignored during the cooldown
  }
  if (s.bad <= c.patience) return false;
  s.cooldown_left = c.cooldown;
  s.bad = 0;
  const double lowered = std::max(s.lr * c.factor, c.min_lr);
  if (s.lr - lowered <= 1e-8) return false;  // PyTorch's eps: already at the floor
  s.lr = lowered;
  return true;
}

}  // namespace mlai::nn
