// conv_direct_impl.h's kernels for AVX-512 (this file is compiled with -mavx512f -mfma): a 16-lane
// vector is one register, 8 output pixels (or input channels) at a time.
#include <immintrin.h>

#include "kernels/conv_direct_impl.h"

namespace mlai::kernels::cpu::direct {
namespace {
struct Avx512 {
  using V = __m512;
  static constexpr int kPixels = 8;
  static constexpr int kChannels = 8;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V broadcast(float f) { return _mm512_set1_ps(f); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
}  // namespace

void forward_rows_avx512(const Forward& a, int64_t r0, int64_t r1) {
  forward_rows<Avx512>(a, r0, r1);
}
void filter_images_avx512(const Filter& a, int64_t n0, int64_t n1, float* dwt) {
  filter_images<Avx512>(a, n0, n1, dwt);
}
void filter_taps_avx512(const Filter& a, int64_t t0, int64_t t1, float* dwt) {
  filter_taps<Avx512>(a, t0, t1, dwt);
}

}  // namespace mlai::kernels::cpu::direct
