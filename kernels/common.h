// Types shared by every kernel family: host-side fp16/bf16 storage types (bit-compatible with
// CUDA's __half and __nv_bfloat16), the accumulator type per dtype, and the opaque CUDA stream
// handle. Nothing here includes a CUDA header, so CPU-only code can use it.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

struct CUstream_st;  // cudaStream_t is CUstream_st*; forward-declared to keep CUDA headers out.

namespace mlai::kernels {

using StreamHandle = CUstream_st*;

// IEEE half, stored as bits. Arithmetic is done in float (see to_float / from_float).
struct Half {
  uint16_t bits = 0;
};
// bfloat16: the top 16 bits of a float32.
struct BFloat16 {
  uint16_t bits = 0;
};

// IEEE half <-> float without branches (selects only), so that loops over arrays can
// vectorize: the CPU's fp16 path converts every element it touches. (GCC 12 at the x86-64
// baseline still leaves float -> half scalar, about 2 GB/s a core; whole arrays go through
// half_convert.h, which uses F16C where the CPU has it.) The same bits as the hardware's
// conversions (F16C's vcvtph2ps and vcvtps2ph rounding to nearest even) for every value but
// NaNs, which stay NaNs (half to float keeps the payload, float to half gives 0x7e00 with the
// sign). The test checks every half and a sweep of floats; every float was checked once by hand.
// a where `pick` is true, else b: masks rather than ?:, which GCC leaves as branches here.
inline uint32_t select_bits(bool pick, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(pick);
  return (a & mask) | (b & ~mask);
}

inline float half_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  // Normal: the bits move up 13 places and the exponent's bias goes from 15 to 127 (+112);
  // inf and NaN (exponent 31) need float's exponent 255: another 112 on top.
  const uint32_t normal = (em << 13) + (112u << 23) + select_bits(em >= 0x7c00u, 112u << 23, 0);
  // Zero and subnormals (exponent 0) are mantissa x 2^-24: exact in float.
  const float small = static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f;
  uint32_t small_bits;
  std::memcpy(&small_bits, &small, 4);
  const uint32_t bits =
      select_bits(em < 0x400u, small_bits, normal) | (static_cast<uint32_t>(h & 0x8000u) << 16);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even float -> half, with overflow to inf and correct subnormals.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t absx = x & 0x7fffffffu;
  // Normal halves: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest
  // even; a carry out of the mantissa steps the exponent, up to 31 (inf) from 65520 on.
  const uint32_t lsb = (absx >> 13) & 1u;
  uint32_t normal = (absx - (112u << 23) + 0xfffu + lsb) >> 13;
  normal = select_bits(normal < 0x7c00u, normal, 0x7c00u);
  // Below 2^-14 the half's grid is 2^-24, float's grid just above 0.5: adding 0.5 makes the
  // float adder round to that grid (to nearest even), and the bits above 0.5's are the half.
  float absf;
  std::memcpy(&absf, &absx, 4);
  const float shifted = absf + 0.5f;
  uint32_t shifted_bits;
  std::memcpy(&shifted_bits, &shifted, 4);
  uint32_t h = select_bits(absx < 0x38800000u, shifted_bits - 0x3f000000u, normal);
  h = select_bits(absx > 0x7f800000u, 0x7e00u, h);  // NaN (inf: the normal path's 0x7c00)
  return static_cast<uint16_t>(h | ((x >> 16) & 0x8000u));
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // nan
  const uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;  // round to nearest even
  return static_cast<uint16_t>(x >> 16);
}

// Accumulator type: double stays double (gradcheck), everything else accumulates in float.
template <class T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <class T>
using acc_t = typename Acc<T>::type;

// Host-side load/store through the accumulator type.
inline float to_acc(float v) { return v; }
inline double to_acc(double v) { return v; }
inline float to_acc(Half v) { return half_to_float(v.bits); }
inline float to_acc(BFloat16 v) { return bf16_to_float(v.bits); }
inline float to_acc(int32_t v) { return static_cast<float>(v); }
inline float to_acc(int64_t v) { return static_cast<float>(v); }
inline float to_acc(uint8_t v) { return static_cast<float>(v); }

template <class T>
inline T from_acc(double v) {
  if constexpr (std::is_same_v<T, Half>) {
    return Half{float_to_half(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return BFloat16{float_to_bf16(static_cast<float>(v))};
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace mlai::kernels
