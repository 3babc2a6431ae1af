// Classification counters kept on the device during an epoch (no host sync per step):
// confusion[target * classes + predicted] += 1 for each sample. Labels outside [0, classes)
// are ignored.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

namespace cpu {
void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n, int64_t classes,
                      int64_t* confusion);
}  // namespace cpu

namespace cuda {
void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n, int64_t classes,
                      int64_t* confusion, StreamHandle stream);
}  // namespace cuda

}  // namespace mlai::kernels
