// CPU twin of kernels/cast.cu: every pair of the seven dtypes, through double (exact for all of
// them), rounding to nearest even into half/bf16.
#include "kernels/cast.h"

#include "kernels/half_convert.h"
#include "kernels/parallel.h"

namespace mlai::kernels::cpu {

namespace {
inline double as_double(float v) { return v; }
inline double as_double(double v) { return v; }
inline double as_double(Half v) { return half_to_float(v.bits); }
inline double as_double(BFloat16 v) { return bf16_to_float(v.bits); }
inline double as_double(int32_t v) { return v; }
inline double as_double(int64_t v) { return static_cast<double>(v); }
inline double as_double(uint8_t v) { return v; }
}  // namespace

// Blocks of elements on the kernel threads (each element on its own: any thread count gives
// the same bits).
template <class Src, class Dst>
void cast(const Src* in, Dst* out, int64_t n) {
  if constexpr ((std::is_same_v<Src, float> && std::is_same_v<Dst, Half>) ||
                (std::is_same_v<Src, Half> && std::is_same_v<Dst, float>)) {
    scale_cast(in, out, n, 1.0f);  // (through half_convert.h: F16C where the CPU has it)
  } else {
    parallel_for(n, kElementGrain, [=](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        if constexpr (std::is_same_v<Src, Dst>) {
          out[i] = in[i];
        } else if constexpr (std::is_same_v<Src, int64_t> && std::is_same_v<Dst, int32_t>) {
          out[i] = static_cast<int32_t>(in[i]);  // not through double: keeps large values exact
        } else {
          out[i] = from_acc<Dst>(as_double(in[i]));
        }
      }
    });
  }
}

template <class Src, class Dst>
void scale_cast(const Src* in, Dst* out, int64_t n, float alpha) {
  parallel_for(n, kElementGrain, [=](int64_t i0, int64_t i1) {
    if constexpr (std::is_same_v<Dst, Half>) {  // F16C where the CPU has it
      floats_to_halves(in + i0, &out[i0].bits, i1 - i0, alpha);
    } else if constexpr (std::is_same_v<Src, Half>) {
      halves_to_floats(&in[i0].bits, out + i0, i1 - i0, alpha);
    } else {
      for (int64_t i = i0; i < i1; ++i) out[i] = from_acc<Dst>(to_acc(in[i]) * alpha);
    }
  });
}
template void scale_cast<float, Half>(const float*, Half*, int64_t, float);
template void scale_cast<float, BFloat16>(const float*, BFloat16*, int64_t, float);
template void scale_cast<Half, float>(const Half*, float*, int64_t, float);
template void scale_cast<BFloat16, float>(const BFloat16*, float*, int64_t, float);

#define MLAI_CAST_TO(S)                        \
  template void cast<S, float>(const S*, float*, int64_t);       \
  template void cast<S, double>(const S*, double*, int64_t);     \
  template void cast<S, Half>(const S*, Half*, int64_t);         \
  template void cast<S, BFloat16>(const S*, BFloat16*, int64_t); \
  template void cast<S, int32_t>(const S*, int32_t*, int64_t);   \
  template void cast<S, int64_t>(const S*, int64_t*, int64_t);   \
  template void cast<S, uint8_t>(const S*, uint8_t*, int64_t);
MLAI_CAST_TO(float)
MLAI_CAST_TO(double)
MLAI_CAST_TO(Half)
MLAI_CAST_TO(BFloat16)
MLAI_CAST_TO(int32_t)
MLAI_CAST_TO(int64_t)
MLAI_CAST_TO(uint8_t)
#undef MLAI_CAST_TO

}  // namespace mlai::kernels::cpu
