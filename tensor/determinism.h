// The process-wide deterministic-algorithms switch (PyTorch's use_deterministic_algorithms):
// when on, cuDNN keeps only algorithms whose results are bitwise reproducible run to run.
// The CPU kernels are deterministic either way. Set once by the Trainer from --deterministic.
#pragma once

namespace mlai::tensor {

void set_deterministic(bool on);
bool deterministic();

}  // namespace mlai::tensor
