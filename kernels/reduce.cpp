// CPU twins of kernels/reduce.cu. Sums accumulate in double in a fixed order: deterministic,
// and at least as accurate as the GPU's tree reductions in fp32 (this is their reference).
#include "kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mlai::kernels::cpu {

template <class T>
void sum_all(const T* x, int64_t n, double scale, T* out) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += to_acc(x[i]);
  out[0] = from_acc<T>(total * scale);
}

template <class T>
void sum_dim(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner, double scale) {
  std::vector<double> acc(static_cast<size_t>(inner));
  for (int64_t o = 0; o < outer; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const T* xo = x + o * dim * inner;
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t i = 0; i < inner; ++i) acc[i] += to_acc(xo[d * inner + i]);
    for (int64_t i = 0; i < inner; ++i)
      out[o * inner + i] = from_acc<T>(acc[i] * scale);
  }
}

template <class T>
void max_dim(const T* x, T* out, int64_t* argmax, int64_t outer, int64_t dim, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* xo = x + o * dim * inner + i;
      acc_t<T> best = to_acc(xo[0]);
      int64_t best_d = 0;
      for (int64_t d = 1; d < dim && !std::isnan(best); ++d) {
        const acc_t<T> v = to_acc(xo[d * inner]);
        if (v > best || std::isnan(v)) {
          best = v;
          best_d = d;
        }
      }
      out[o * inner + i] = xo[best_d * inner];
      argmax[o * inner + i] = best_d;
    }
  }
}

#define MLAI_INSTANTIATE(T)                                                          \
  template void sum_all<T>(const T*, int64_t, double, T*);                           \
  template void sum_dim<T>(const T*, T*, int64_t, int64_t, int64_t, double);         \
  template void max_dim<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
