// CPU twin of kernels/fill.cu: the same counter-based generator, so the same numbers.
#include "kernels/fill.h"

#include <cmath>

namespace mlai::kernels::cpu {

template <class T>
void fill(T* out, int64_t n, double value) {
  const T v = from_acc<T>(value);
  for (int64_t i = 0; i < n; ++i) out[i] = v;
}

template <class T>
void uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo, double hi) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = from_acc<T>(lo + (hi - lo) * uniform01(seed, offset + static_cast<uint64_t>(i)));
}

template <class T>
void normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean, double stddev) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t c = 2 * (offset + static_cast<uint64_t>(i));
    const double u1 = uniform01(seed, c);
    const double u2 = uniform01(seed, c + 1);
    const double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(kTwoPi * u2);
    out[i] = from_acc<T>(mean + stddev * z);
  }
}

#define MLAI_INSTANTIATE(T)                                                        \
  template void fill<T>(T*, int64_t, double);                                      \
  template void uniform<T>(T*, int64_t, uint64_t, uint64_t, double, double);       \
  template void normal<T>(T*, int64_t, uint64_t, uint64_t, double, double);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
MLAI_INSTANTIATE(Half)
MLAI_INSTANTIATE(BFloat16)
MLAI_INSTANTIATE(int32_t)
MLAI_INSTANTIATE(int64_t)
MLAI_INSTANTIATE(uint8_t)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
