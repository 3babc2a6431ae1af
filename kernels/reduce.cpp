// CPU twins of kernels/reduce.cu. Sums accumulate in acc_t<T> in a fixed order (deterministic).
#include "kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mlai::kernels::cpu {

template <class T>
void sum_all(const T* x, int64_t n, double scale, T* out) {
  // Pairwise-ish: blocks of 4096 summed separately keep float error near O(log n).
  acc_t<T> total = 0;
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    acc_t<T> part = 0;
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    for (int64_t i = b; i < e; ++i) part += to_acc(x[i]);
    total += part;
  }
  out[0] = from_acc<T>(static_cast<double>(total) * scale);
}

template <class T>
void sum_dim(const T* x, T* out, int64_t outer, int64_t dim, int64_t inner, double scale) {
  std::vector<acc_t<T>> acc(static_cast<size_t>(inner));
  for (int64_t o = 0; o < outer; ++o) {
    std::fill(acc.begin(), acc.end(), acc_t<T>(0));
    const T* xo = x + o * dim * inner;
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t i = 0; i < inner; ++i) acc[i] += to_acc(xo[d * inner + i]);
    for (int64_t i = 0; i < inner; ++i)
      out[o * inner + i] = from_acc<T>(static_cast<double>(acc[i]) * scale);
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
