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

template <class T>
void topk_hits(const T* logits, const int64_t* target, int64_t n, int64_t classes, int64_t k,
               int64_t* hits) {
  for (int64_t r = 0; r < n; ++r) {
    const int64_t t = target[r];
    if (t < 0 || t >= classes) continue;
    const T* row = logits + r * classes;
    const acc_t<T> tv = to_acc(row[t]);
    const bool t_nan = tv != tv;
    int64_t above = 0;
    for (int64_t d = 0; d < classes; ++d) {
      const acc_t<T> v = to_acc(row[d]);
      const bool v_nan = v != v;
      // argmax's order: does class d rank above the target?
      above += d != t && ((v_nan || t_nan) ? v_nan && (!t_nan || d < t)
                                           : v > tv || (v == tv && d < t));
    }
    *hits += above < k;
  }
}

#define MLAI_INSTANTIATE(T) \
  template void topk_hits<T>(const T*, const int64_t*, int64_t, int64_t, int64_t, int64_t*);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
