// Device-side helpers shared by the .cu files: loads and stores between the storage types and
// their accumulator (Half is __half, BFloat16 is __nv_bfloat16, bit for bit), 16-byte packs for
// vectorized access, launch sizing, and deterministic warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/common.h"
#include "kernels/cuda_check.h"

namespace mlai::kernels::dev {

constexpr int kBlock = 256;
// Grid-stride loops cover any size, so grids stop growing here (about 256 blocks per SM on
// the biggest GPUs: enough to fill them, few enough to keep per-block overhead small).
constexpr int64_t kMaxGrid = 65535;

inline unsigned grid_size(int64_t work_items, int block = kBlock) {
  const int64_t blocks = (work_items + block - 1) / block;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxGrid ? kMaxGrid : blocks));
}

__host__ __device__ inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// --- loads: storage type -> accumulator --------------------------------------------------------
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(Half v) { return __half2float(__ushort_as_half(v.bits)); }
__device__ __forceinline__ float to_acc(BFloat16 v) {
  return __uint_as_float(static_cast<uint32_t>(v.bits) << 16);
}

// --- stores: same rounding as the host's from_acc (common.h) ------------------------------------
// float -> bf16 uses the host's bit recipe (round to nearest even, quiet nan) so that both
// backends produce identical bits.
__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

template <class T>
__device__ __forceinline__ T from_acc(float v) {
  if constexpr (std::is_same_v<T, Half>) {
    return Half{__half_as_ushort(__float2half_rn(v))};
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return BFloat16{float_to_bf16_bits(v)};
  } else {
    return static_cast<T>(v);
  }
}
// A double goes to half/bf16 through float, exactly as the host does.
template <class T>
__device__ __forceinline__ T from_acc(double v) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    return from_acc<T>(__double2float_rn(v));
  } else {
    return static_cast<T>(v);
  }
}

// Unfused multiply and add, so results round exactly as the CPU twins' separate operations do
// (nvcc would otherwise contract a*b+c into one fma).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }
__device__ __forceinline__ float log_acc(float v) { return logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }
__device__ __forceinline__ float fmax_acc(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double fmax_acc(double a, double b) { return fmax(a, b); }

// --- 16-byte packs -------------------------------------------------------------------------------
template <class T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / static_cast<int>(sizeof(T));
  T v[kN];
};

// --- reductions (fixed order: the same inputs give the same bits on every run) ------------------
template <class A>
__device__ __forceinline__ A warp_sum(A v) {  // result in every lane
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class A>
__device__ __forceinline__ A warp_max(A v) {  // fmax: a nan loses unless every lane is nan
  for (int o = 16; o > 0; o >>= 1) v = fmax_acc(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32); the result is valid in thread 0.
// Uses a static shared buffer: call __syncthreads() before calling it again in one kernel.
template <class A>
__device__ A block_sum(A v) {
  __shared__ A warp_parts[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_parts[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = threadIdx.x < warps ? warp_parts[threadIdx.x] : A(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

// argmax order: does (v, i) beat (best, best_i)? A nan beats any number (the first nan wins),
// otherwise the larger value, and on ties the smaller index: the CPU twin's scan order.
template <class A>
__device__ __forceinline__ bool beats(A v, int64_t i, A best, int64_t best_i) {
  const bool v_nan = v != v, best_nan = best != best;
  if (v_nan || best_nan) return v_nan && (!best_nan || i < best_i);
  return v > best || (v == best && i < best_i);
}

}  // namespace mlai::kernels::dev
