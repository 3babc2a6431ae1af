// --activation-checkpointing: torch.utils.checkpoint around each residual block (what
// Lightning's FSDP/DeepSpeed strategies and hand-written LightningModules do): a block keeps
// only its input for backward and runs again there, so activation memory grows with the number
// of blocks' inputs rather than with every layer's output, for about one more forward pass.
#pragma once

#include "nn/module.h"

namespace mlai::nn {

// Marks every residual block of `model` (BasicBlock, Bottleneck, WideBasic, InvertedResidual,
// a ViT's EncoderBlock) checkpointed and returns how many there are (0: the model has none,
// e.g. the mlp).
int enable_activation_checkpointing(Module& model);
// Whether m is one of those blocks (also ZeRO stage 3's units, nn/zero.h).
bool is_residual_block(const Module& m);

}  // namespace mlai::nn
