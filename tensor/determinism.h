// The process-wide deterministic-algorithms and cuDNN benchmark switches. The first is PyTorch's
// use_deterministic_algorithms: when on, cuDNN keeps only algorithms whose results are bitwise
// reproducible run to run.
// The CPU kernels are deterministic either way. Set once by the Trainer from --deterministic.
#pragma once

namespace mlai::tensor {

void set_deterministic(bool on);
bool deterministic();

// torch.backends.cudnn.benchmark (Lightning's Trainer(benchmark=...)), on by default here: cuDNN
// times every algorithm once per convolution shape and keeps the fastest. Off: cuDNN's
// heuristic picks without timing (PyTorch's default; no search at start-up, but the choice
// can be slower). Set once by the Trainer from --cudnn-benchmark; deterministic mode always
// takes the heuristic's deterministic choice.
void set_cudnn_benchmark(bool on);
bool cudnn_benchmark();

}  // namespace mlai::tensor
