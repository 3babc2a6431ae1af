// Fill and counter-based random numbers. Element i of a random fill depends only on
// (seed, offset + i), so CPU and GPU produce the same numbers for the same seed and the result
// does not depend on how the work is split into threads: reproducible by construction.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace mlai::kernels {

// The per-element generator, shared by both backends (host and device).
#if defined(__CUDACC__)
#define MLAI_HD __host__ __device__ __forceinline__
#else
#define MLAI_HD inline
#endif

// splitmix64 finaliser over (seed, counter): a strong 64-bit mix, cheap on GPUs.
MLAI_HD uint64_t mix64(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + counter + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Uniform in [0, 1) with 53 random bits.
MLAI_HD double uniform01(uint64_t seed, uint64_t counter) {
  return static_cast<double>(mix64(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

#define MLAI_FILL_DECLS(...)                                                                \
  template <class T>                                                                        \
  void fill(T* out, int64_t n, double value __VA_ARGS__);                                   \
  /* out[i] = lo + (hi - lo) * u(seed, offset + i) */                                       \
  template <class T>                                                                        \
  void uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, double lo,                \
               double hi __VA_ARGS__);                                                      \
  /* Box-Muller on counters 2(offset+i) and 2(offset+i)+1 */                                \
  template <class T>                                                                        \
  void normal(T* out, int64_t n, uint64_t seed, uint64_t offset, double mean,               \
              double stddev __VA_ARGS__);

namespace cpu {
MLAI_FILL_DECLS()
}  // namespace cpu

namespace cuda {
MLAI_FILL_DECLS(, StreamHandle stream)
}  // namespace cuda

#undef MLAI_FILL_DECLS

}  // namespace mlai::kernels
