// Classification counters kept on the device during an epoch (no host sync per step):
// confusion[target * classes + predicted] += 1 for each sample; hits[0] += the samples whose
// target is among the k highest logits (top-k accuracy). Labels outside [0, classes) are
// ignored.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

// Top-k ranks logits [n, classes] in argmax's order (a nan first, then larger values, ties to
// the smaller index), so top-1 hits are exactly the confusion matrix's diagonal: a sample hits
// when fewer than k classes rank above its target.
#define MLAI_METRICS_DECLS(...)                                                                \
  void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n,            \
                        int64_t classes, int64_t* confusion __VA_ARGS__);                      \
  template <class T>                                                                           \
  void topk_hits(const T* logits, const int64_t* target, int64_t n, int64_t classes, int64_t k, \
                 int64_t* hits __VA_ARGS__);

namespace cpu {
MLAI_METRICS_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_METRICS_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_METRICS_DECLS

}  // namespace mlai::kernels
