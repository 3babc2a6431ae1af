// The F16C half of kernels/half_convert.h, compiled with -mf16c -mavx (x86 only; the caller
// checks the CPU first). Eight values per instruction; a tail of fewer goes through the same
// instructions on a zero-padded copy, so every element gets the same rounding.
#if defined(MLAI_X86_F16C)
#include <immintrin.h>

#include <cstring>

#include "kernels/half_convert.h"

namespace mlai::kernels::cpu::f16c {

namespace {
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT;  // vcvtps2ph: round to nearest even

inline __m128i load8(const uint16_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
inline void store8(uint16_t* p, __m128i v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }

inline __m128i to_half(const float* in, __m256 a, bool scale) {
  __m256 v = _mm256_loadu_ps(in);
  if (scale) v = _mm256_mul_ps(v, a);
  return _mm256_cvtps_ph(v, kRound);
}
inline __m256 to_float(const uint16_t* in, __m256 a, bool scale) {
  const __m256 v = _mm256_cvtph_ps(load8(in));
  return scale ? _mm256_mul_ps(v, a) : v;
}
inline __m128i add8(const uint16_t* a, const uint16_t* b) {
  return _mm256_cvtps_ph(_mm256_add_ps(_mm256_cvtph_ps(load8(a)), _mm256_cvtph_ps(load8(b))),
                         kRound);
}
}  // namespace

// body(in, out) converts 8 elements; a tail of fewer goes through zero-padded copies.
template <class In, class Out, class Body>
void by_eights(const In* in, Out* out, int64_t n, Body body) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) body(in + i, out + i);
  if (i == n) return;
  const auto rest = static_cast<size_t>(n - i);
  In x[8] = {};
  Out y[8];
  std::memcpy(x, in + i, rest * sizeof(In));
  body(x, y);
  std::memcpy(out + i, y, rest * sizeof(Out));
}

void floats_to_halves(const float* in, uint16_t* out, int64_t n, float alpha) {
  const __m256 a = _mm256_set1_ps(alpha);
  const bool scale = alpha != 1.0f;
  by_eights(in, out, n, [&](const float* x, uint16_t* y) { store8(y, to_half(x, a, scale)); });
}

void halves_to_floats(const uint16_t* in, float* out, int64_t n, float alpha) {
  const __m256 a = _mm256_set1_ps(alpha);
  const bool scale = alpha != 1.0f;
  by_eights(in, out, n,
            [&](const uint16_t* x, float* y) { _mm256_storeu_ps(y, to_float(x, a, scale)); });
}

void add_halves(const uint16_t* a, uint16_t* b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(b + i, add8(a + i, b + i));
  if (i == n) return;
  const auto rest = static_cast<size_t>(n - i);
  uint16_t x[8] = {}, y[8] = {};
  std::memcpy(x, a + i, rest * sizeof(uint16_t));
  std::memcpy(y, b + i, rest * sizeof(uint16_t));
  store8(y, add8(x, y));
  std::memcpy(b + i, y, rest * sizeof(uint16_t));
}

}  // namespace mlai::kernels::cpu::f16c
#endif
