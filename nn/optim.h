// Optimizers by name (sgd, adam, adamw with PyTorch's semantics; lars, lamb with timm's), each step
// one fused multi-tensor kernel (a few launches for a whole model). State tensors are named after
// their parameter ("fc.weight.momentum_buffer") for checkpoints.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/optim.h"
#include "nn/module.h"

namespace mlai::nn {

struct OptimizerConfig {
  std::string name = "sgd";
  double lr = 0.01;
  double momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip_value = 0;  // > 0: clamp every gradient element to [-v, v] (clip_grad_value_)
  // "No bias decay" (Bag of Tricks; timm's filter_bias_and_bn): weight decay on weight
  // matrices and filters only, not on parameters of one dimension or none (biases, batch-norm
  // and layer-norm weights and biases) nor on a ViT's class token and position embeddings
  // (timm's no_weight_decay()): two parameter groups, as torch.optim with {"weight_decay": 0}.
  bool no_bias_decay = false;
  // LARS and LAMB (kernels/optim.h): LARS's trust coefficient (eta), and trust_clip (LARS:
  // LARC's min(ratio / lr, 1); LAMB: min(ratio, 1)).
  double trust_coefficient = 0.001;
  bool trust_clip = false;
  // ZeRO stage 1 (nn/zero.h): owned[i] says whether this rank steps parameter i; the optimizer
  // then keeps state for (and updates) the owned parameters only. Empty: all of them.
  std::vector<bool> owned;
  // ZeRO stage 2: only the owned parameters have gradients (the reducer sums each to its
  // owner), so gradients() lists those alone; the caller sums per-rank results (the inf check,
  // the clipping norm) over the ranks.
  bool sharded_gradients = false;
};

class Optimizer {
 public:
  Optimizer(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg);
  virtual ~Optimizer() = default;

  // Updates every parameter that has a gradient, reading grad * grad_scale (* inv_scale[0]
  // when given: a device value, 1/loss scale). skip_if: see kernels/optim.h (a device flag
  // from the AMP check: a flagged step changes nothing, on the device, with no host sync; the
  // host-side step count still advances, see Trainer).
  virtual void step(float grad_scale = 1.0f, const Tensor& skip_if = Tensor(),
                    const Tensor& inv_scale = Tensor()) = 0;
  void zero_grad();
  // Mixed precision: working[i] (parallel to the parameters; undefined where none) is the
  // fp16/bf16 copy forward() used: its gradient is the one read, and the step refreshes it
  // from the updated float32 master (Module::working_parameters()).
  void set_working(std::vector<Variable> working);
  // The gradients the next step() reads (working copies' where they exist), in order.
  std::vector<Tensor> gradients() const;

  // Group 0's rate (the schedule's).
  double lr() const { return cfg_.lr; }
  void set_lr(double lr) { cfg_.lr = lr; }
  // Steps taken since construction (group 0's step count). While a device offset is set (see
  // set_step_count) this reads it: a device sync, for checkpoints and the like.
  int64_t step_count() const;
  // The count of steps taken is s; or, given `minus` (an int64 [1] on the parameters' device
  // that the device changes between steps: the AMP scaler's skipped steps), s - minus[0], which
  // the step's kernels read when they run, so that the host never waits to learn it. Each
  // step() adds 1 to s.
  void set_step_count(int64_t s, const Tensor& minus = Tensor()) {
    steps_ = s;
    step_offset_ = minus;
  }

  // Capturable steps (PyTorch's capturable=True): step() reads each parameter group's rate and
  // step number from a device buffer, so that a step captured into a CUDA graph
  // (--cuda-graphs) runs each replay with that replay's values. stage() writes them from the
  // host's (a few tiny launches on the stream); step() stages them itself, except while the
  // stream is being captured: then whoever replays the graph calls stage() before each replay.
  // At most kMaxCapturableGroups parameter groups.
  static constexpr int kMaxCapturableGroups = 8;
  void set_capturable(bool on);
  bool capturable() const { return lr_and_step_.defined(); }
  void stage();

  // Parameter groups, as torch.optim's param_groups: group 0 holds every parameter at first.
  // add_group moves the named parameters into a new group with its own rate, whose step count
  // starts at 0 now (torch's per-parameter state["step"] for parameters first stepped now: the
  // SGD momentum buffer starts as the gradient, Adam's bias correction counts from 1). Their
  // state tensors are whatever they hold (zeros if they were never stepped). Returns its index.
  int add_group(const std::vector<std::string>& names, double lr);
  // A group added at `start` (group 0's step count then): for resuming a checkpoint.
  int add_group(const std::vector<std::string>& names, double lr, int64_t start);
  int group_count() const { return static_cast<int>(groups_.size()) + 1; }
  double group_lr(int g) const;
  void set_group_lr(int g, double lr);
  int64_t group_start(int g) const;
  std::vector<std::string> group_names(int g) const;
  const OptimizerConfig& config() const { return cfg_; }

  // Named state tensors (for checkpoints); loading writes into them in place. Under ZeRO
  // (OptimizerConfig::owned) the state of parameters other ranks own is listed undefined.
  std::vector<std::pair<std::string, Tensor*>> state();

  // ZeRO (OptimizerConfig::owned): whether this rank steps parameter i. Under stage 1
  // gradients() still lists every gradient (the loss scaler's inf check and the clipping norm
  // need all of them); under stage 2 (sharded_gradients) the owned ones.
  bool owns(size_t i) const { return cfg_.owned.empty() || cfg_.owned[i]; }
  const std::vector<std::pair<std::string, Variable>>& parameters() const { return params_; }
  // Parameter i's working copy (undefined without one).
  Variable working(size_t i) const { return working_.empty() ? Variable() : working_[i]; }
  // Parameter i's state tensors, one per slot (momentum; Adam's two moments); undefined for
  // the parameters other ranks own. One may be put in such a place (float32, the parameter's
  // shape: a checkpoint's write under ZeRO) and taken out again.
  std::vector<Tensor*> state_of(size_t i);
  size_t slot_count() const { return slots_.size(); }
  // Bytes of state this optimizer holds now (the defined state tensors).
  int64_t state_bytes() const;

 protected:
  // Parameters (with defined gradients) and the matching state tensors of slot `s`; with
  // `decayed` (0 or 1), only the parameters of that weight-decay group (see no_bias_decay);
  // with `group` >= 0, only that parameter group's.
  // Under ZeRO only the parameters this rank owns (every one with `any_owner`).
  void gather(std::vector<Tensor>& p, std::vector<Tensor>& g, std::vector<Tensor>& w,
              std::vector<std::vector<Tensor>*> slots_out, std::vector<int> slots, int decayed = -1,
              int group = -1, bool any_owner = false) const;
  // Group g's step count before this step on the host (0 for a group's first); the kernels
  // subtract step_offset_[0] from it when one is set.
  int64_t group_steps(int g) const { return steps_ - group_start(g); }
  // Whether parameter i gets weight decay.
  bool decays(size_t i) const;
  // What a step launches: for each parameter group, its weight-decay groups ({decay} or, under
  // no_bias_decay, {decay, 0}).
  struct Launch {
    int group;    // parameter group
    int decayed;  // for gather(): -1 all, 1 decayed, 0 not
    double decay;
  };
  std::vector<Launch> launches() const;
  // The arguments every fused step shares (kernels/optim.h): launch l's rate, weight decay and
  // step number, grad_scale, and the clip value.
  template <class Args>
  Args step_args(const Launch& l, float grad_scale) const {
    Args a;
    a.lr = group_lr(l.group);
    a.weight_decay = l.decay;
    a.step = group_steps(l.group) + 1;
    if (cfg_.clip_value > 0) a.clip_value = static_cast<float>(cfg_.clip_value);
    a.grad_scale = grad_scale;
    return a;
  }
  std::vector<std::pair<std::string, Variable>> params_;
  std::vector<Variable> working_;  // empty, or parallel to params_
  std::vector<std::string> slot_names_;
  std::vector<std::vector<Tensor>> slots_;  // slots_[s][i]: state s of parameter i
  OptimizerConfig cfg_;
  int64_t steps_ = 0;
  Tensor step_offset_;  // undefined, or the device count subtracted from steps_
  Tensor lr_and_step_;  // capturable: float64 {lr, step} per parameter group, on the device
  // A slot's state: float32 zeros shaped as each owned parameter (undefined for the others).
  std::vector<Tensor> zero_state() const;
  // Group g's {lr, step} on the device when capturable, else undefined (the kernels then take
  // the host's values); what step() calls first.
  Tensor device_scalars(int g) const;
  void stage_unless_capturing();

 private:
  struct Group {
    double lr;
    int64_t start;
  };
  std::vector<Group> groups_;  // groups 1, 2, ...
  std::vector<int> group_of_;  // parallel to params_
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg);
  void step(float grad_scale = 1.0f, const Tensor& skip_if = Tensor(),
            const Tensor& inv_scale = Tensor()) override;

 protected:
  // One launch family's fused step (Lars scales it by its trust ratios): parameters,
  // gradients, working copies, momentum buffers (empty without momentum), the step's
  // arguments and device values (see tensor::sgd_step_).
  virtual void launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                      const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                      const kernels::SgdArgs& a, const Tensor& inv_scale, const Tensor& skip_if,
                      const Tensor& lr_and_step);
};

class Adam : public Optimizer {  // AdamW when decoupled
 public:
  Adam(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg,
       bool decoupled);
  void step(float grad_scale = 1.0f, const Tensor& skip_if = Tensor(),
            const Tensor& inv_scale = Tensor()) override;

 protected:
  // One launch family's fused step (Lamb scales it by its trust ratios), as SGD::launch.
  virtual void launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
                      const std::vector<Tensor>& w, const std::vector<Tensor>& m,
                      const std::vector<Tensor>& v, const kernels::AdamArgs& a,
                      const Tensor& inv_scale, const Tensor& skip_if, const Tensor& lr_and_step);

 private:
  bool decoupled_;
};

// LARS: SGD (momentum, dampening, nesterov) with each tensor's step scaled by its trust ratio
// (timm's Lars, Lightning Bolts' LARS). Parameters without weight decay (all of them at
// weight_decay 0; biases and batch norm under no_bias_decay) take plain SGD steps.
class Lars : public SGD {
 public:
  Lars(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg);

 protected:
  void launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
              const std::vector<Tensor>& w, const std::vector<Tensor>& m, const kernels::SgdArgs& a,
              const Tensor& inv_scale, const Tensor& skip_if, const Tensor& lr_and_step) override;

 private:
  Tensor scratch_;  // the CUDA step's norms and ratios
};

// LAMB: Adam's moments, the update (with decoupled weight decay) scaled by |p| / |update| per
// tensor (timm's Lamb, apex's FusedLAMB without their built-in gradient-norm clipping).
class Lamb : public Adam {
 public:
  Lamb(std::vector<std::pair<std::string, Variable>> params, const OptimizerConfig& cfg);

 protected:
  void launch(const std::vector<Tensor>& p, const std::vector<Tensor>& g,
              const std::vector<Tensor>& w, const std::vector<Tensor>& m,
              const std::vector<Tensor>& v, const kernels::AdamArgs& a, const Tensor& inv_scale,
              const Tensor& skip_if, const Tensor& lr_and_step) override;

 private:
  Tensor scratch_;
};

// "sgd", "adam", "adamw", "lars" or "lamb"; an unknown name is an error listing the choices.
std::unique_ptr<Optimizer> make_optimizer(std::vector<std::pair<std::string, Variable>> params,
                                          const OptimizerConfig& cfg);

}  // namespace mlai::nn
