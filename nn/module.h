// Module: named parameters, buffers and children with torchvision-style dotted names
// ("1.weight", "layer1.0.bn1.running_mean"), train/eval mode, zero_grad, device moves.
// A layer implements forward() and registers what it owns in its constructor.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "autograd/anomaly.h"
#include "autograd/ops.h"
#include "tensor/trace.h"

namespace mlai::nn {

using autograd::Variable;
using tensor::Device;
using tensor::DType;
using tensor::Generator;
using tensor::Shape;
using tensor::Tensor;

class Module;

// The model summary's FLOPs column: while a Recording of it is alive on this thread, each
// module call adds the FLOPs autograd counted during it (its children's included) to the module.
class ModuleFlops {
 public:
  int64_t of(const Module* m) const;  // -1: the module did not run
  class Recording {
   public:
    explicit Recording(ModuleFlops& into);
    ~Recording();
    Recording(const Recording&) = delete;
    Recording& operator=(const Recording&) = delete;

   private:
    ModuleFlops* outer_;
  };
  // Counts the FLOPs from here to the end of the scope as module m's (nothing when no
  // ModuleFlops is alive: one thread-local load).
  class Scope {
   public:
    explicit Scope(const Module* m);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    ModuleFlops* into_;
    const Module* module_;
    int64_t start_ = 0;
  };

 private:
  std::unordered_map<const Module*, int64_t> flops_;
};

class Module {
 public:
  virtual ~Module() = default;
  virtual Variable forward(const Variable& x) = 0;
  virtual std::string type_name() const = 0;
  // forward(), timed as one span (its trace label, else its type) while a trace records, its
  // output checked under --detect-anomaly; between its ZeRO stage 3 unit's gathers and
  // releases; while training with gradients on, under activation checkpointing where marked.
  Variable operator()(const Variable& x) {
    trace::Span span([this] { return trace_label_.empty() ? type_name() : trace_label_; },
                     "forward");
    ModuleFlops::Scope flops(this);
    const bool recording = training_ && autograd::grad_enabled();
    Variable out = unit_                        ? unit_forward(x, recording)
                   : checkpointed_ && recording ? checkpointed_forward(x)
                                                : forward(x);
    if (autograd::anomaly_forward())
      check_anomaly(x, out, trace_label_.empty() ? type_name() : trace_label_);
    return out;
  }
  // Throws autograd::AnomalyError naming `what` when `out` holds inf/nan and `in` does not.
  static void check_anomaly(const Variable& in, const Variable& out, const std::string& what);
  // Labels this module and every one under it "name (Type)" with their dotted names, as the
  // model summary shows them (the root: its type), for --profiler-trace's spans.
  void label_for_trace(const std::string& name = "");

  // Depth-first in registration order: a module's own entries, then each child's.
  std::vector<std::pair<std::string, Variable>> named_parameters() const;
  std::vector<Variable> parameters() const;
  std::vector<std::pair<std::string, Tensor*>> named_buffers();
  // Everything the model's state is, by name: the parameters' tensors, then the buffers (a
  // checkpoint's "model" group, a weight average, what ranks broadcast).
  std::vector<std::pair<std::string, Tensor*>> named_tensors();
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  int64_t parameter_count() const;
  // Random generators owned by layers (dropout), by dotted name: saved in checkpoints so a
  // resumed run draws the same numbers.
  std::vector<std::pair<std::string, Generator*>> named_generators();
  virtual Generator* generator() { return nullptr; }

  void train(bool on = true);
  void eval() { train(false); }
  // --activation-checkpointing (nn/activation_checkpointing.h): while training with gradients
  // on, this module's forward runs under autograd::checkpoint.
  void set_checkpointed(bool on) { checkpointed_ = on; }
  bool checkpointed() const { return checkpointed_; }
  bool is_training() const { return training_; }
  // ZeRO stage 3 (--strategy zero3, nn/zero.h): this module is a unit of FSDP's: gather(false)
  // before its forward and release(false) after it; while training with gradients on, also
  // gather(true) when backward reaches its output and release(true) once backward has passed
  // its input.
  struct ShardedUnit {
    std::function<void(bool backward)> gather, release;
  };
  void set_sharded_unit(std::shared_ptr<ShardedUnit> unit) { unit_ = std::move(unit); }
  void zero_grad();
  void to(const Device& d);  // moves every parameter and buffer (gradients are dropped)

  // Mixed precision. The parameters stay float32 (the master weights: what the optimizer
  // updates and checkpoints hold); set_compute_dtype(kFloat16 or kBFloat16) gives each
  // parameter of a layer that computes in low precision (Linear, Conv2d; not batch norm, whose
  // parameters stay float32 as cuDNN wants) a working copy in that dtype, which forward() uses
  // and backward() gives the gradient to. The optimizer refreshes the copies from the masters
  // in its fused step. kFloat32 drops them. Call after to().
  void set_compute_dtype(DType dt);
  DType compute_dtype() const { return compute_dtype_; }
  // Parallel to named_parameters(): each parameter's working copy, undefined where it has none.
  std::vector<Variable> working_parameters() const;
  // Rewrites every working copy from its master (after loading weights into the masters);
  // those whose master is released (ZeRO's sharded masters) are left for their owner to send.
  void refresh_working_parameters();

 protected:
  // The Variable forward() computes with for parameter p: its working copy, if it has one.
  const Variable& use(const Variable& p) const;
  // False for layers whose parameters stay float32 under mixed precision (batch norm).
  virtual bool low_precision_parameters() const { return true; }
  Variable& register_parameter(const std::string& name, Tensor value);
  Tensor& register_buffer(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Variable>>& out) const;
  void collect_working(std::vector<Variable>& out) const;
  // forward() under autograd::checkpoint, its recomputation drawing the same dropout masks and
  // leaving batch-norm statistics alone (nn/activation_checkpointing.cpp).
  Variable checkpointed_forward(const Variable& x);
  // forward() (or checkpointed_forward()) between the unit's gathers and releases, those of
  // backward too when `recording` (module.cpp).
  Variable unit_forward(const Variable& x, bool recording);
  std::shared_ptr<ShardedUnit> unit_;
  bool training_ = true;
  bool checkpointed_ = false;
  DType compute_dtype_ = DType::kFloat32;
  std::vector<std::pair<std::string, Variable>> params_;
  std::vector<Variable> working_;  // parallel to params_ (empty: no working copies)
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::string trace_label_;
};

// Children named "0", "1", ...; a Linear followed by a ReLU runs as one fused linear+relu.
class Sequential : public Module {
 public:
  Sequential() = default;
  void add(std::shared_ptr<Module> m);
  size_t size() const { return children().size(); }
  Variable forward(const Variable& x) override;
  std::string type_name() const override { return "Sequential"; }
};

}  // namespace mlai::nn
