// Internal to tensor/: MLAI_CALL runs a kernel entry point on the right backend, on the
// current stream of the tensor's device.
#pragma once

#include "tensor/stream.h"

namespace mlai::tensor {
namespace k = mlai::kernels;
}  // namespace mlai::tensor

// Calls kernels::cuda::FN(args..., stream) on a CUDA device, kernels::cpu::FN(args...) on the CPU.
#ifdef MLAI_WITH_CUDA
#define MLAI_CALL(DEV, FN, ...)                                                   \
  do {                                                                            \
    if ((DEV).is_cuda()) {                                                        \
      k::cuda::FN(__VA_ARGS__, current_stream(DEV).handle());                     \
    } else {                                                                      \
      k::cpu::FN(__VA_ARGS__);                                                    \
    }                                                                             \
  } while (0)
#else
#define MLAI_CALL(DEV, FN, ...) k::cpu::FN(__VA_ARGS__)
#endif
