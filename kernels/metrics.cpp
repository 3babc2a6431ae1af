// CPU twin of kernels/metrics.cu.
#include "kernels/metrics.h"

namespace mlai::kernels::cpu {

void confusion_update(const int64_t* predicted, const int64_t* target, int64_t n, int64_t classes,
                      int64_t* confusion) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = target[i], p = predicted[i];
    if (t >= 0 && t < classes && p >= 0 && p < classes) ++confusion[t * classes + p];
  }
}

}  // namespace mlai::kernels::cpu
