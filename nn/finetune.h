// Fine-tuning a classifier, as Lightning's BaseFinetuning and BackboneFinetuning callbacks do
// it. The head is the layer that owns the model's last parameters (fc in the ResNets, the last
// Linear of the MLP); the backbone is everything before it.
//
// Freezing a parameter is torch's requires_grad = False, on the float32 master and on its
// fp16/bf16 working copy: backward computes no gradient for it (a convolution skips its
// filter gradient; with batch norm frozen too, backward stops at the head), the optimizer and
// the data-parallel reducer leave it out.
#pragma once

#include <string>
#include <vector>

#include "nn/module.h"

namespace mlai::nn {

// The head's name prefix ("fc"); the model's last parameter's module.
std::string head_prefix(const Module& m);
// The head's parameter names ("fc.weight", "fc.bias").
std::vector<std::string> head_parameter_names(const Module& m);

// BaseFinetuning.freeze(backbone, train_bn): every backbone parameter stops requiring gradients,
// except batch norm's with train_bn; without train_bn, batch norm also stops tracking running
// statistics (torch's track_running_stats = False). Returns the frozen parameters' names, in
// registration order.
std::vector<std::string> freeze_backbone(Module& m, bool train_bn);

// BaseFinetuning.freeze(modules, train_bn) for the named modules (dotted names: "conv1",
// "layer1", "layer2.0"), the same way; a name without parameters is an error listing the
// model's modules.
std::vector<std::string> freeze_modules(Module& m, const std::vector<std::string>& modules,
                                        bool train_bn);

// BaseFinetuning.make_trainable: the named parameters require gradients again, and the batch
// norms among them track running statistics again.
void make_trainable(Module& m, const std::vector<std::string>& names);

// The parameters that require gradients, by name (what the optimizer steps and the reducer
// allreduces), and how many values they hold.
std::vector<std::pair<std::string, Variable>> trainable_parameters(const Module& m);
int64_t trainable_parameter_count(const Module& m);

// BackboneFinetuning's rate for the backbone at the start of `epoch` (0-based), given the rate
// at the previous epoch's start (`previous`, unused at the unfreeze epoch) and the head's rate
// now (`current`): current * initial_ratio at unfreeze_epoch; after it previous * growth
// (lambda_func = multiplicative), capped at `current` (should_align). -1 before unfreeze_epoch.
double backbone_lr(int64_t epoch, int64_t unfreeze_epoch, double previous, double current,
                   double initial_ratio, double growth);

}  // namespace mlai::nn
