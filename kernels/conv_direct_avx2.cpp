// conv_direct_impl.h's kernels for AVX2 + FMA (this file is compiled with -mavx2 -mfma): a
// 16-lane vector is two registers, 6 output pixels (or input channels) at a time, which with the
// filter vector fills 14 of the 16 registers.
#include <immintrin.h>

#include "kernels/conv_direct_impl.h"

namespace mlai::kernels::cpu::direct {
namespace {
struct Avx2 {
  struct V {
    __m256 lo, hi;
  };
  static constexpr int kPixels = 6;
  static constexpr int kChannels = 6;
  static V zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static V load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static void store(float* p, V v) {
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
  }
  static V broadcast(float f) {
    const __m256 b = _mm256_set1_ps(f);
    return {b, b};
  }
  static V fma(V a, V b, V c) {
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
  }
};
}  // namespace

void forward_rows_avx2(const Forward& a, int64_t r0, int64_t r1) { forward_rows<Avx2>(a, r0, r1); }
void filter_images_avx2(const Filter& a, int64_t n0, int64_t n1, float* dwt) {
  filter_images<Avx2>(a, n0, n1, dwt);
}
void filter_taps_avx2(const Filter& a, int64_t t0, int64_t t1, float* dwt) {
  filter_taps<Avx2>(a, t0, t1, dwt);
}

}  // namespace mlai::kernels::cpu::direct
