// Arrays of float <-> IEEE half, with x86's F16C instructions (vcvtps2ph, vcvtph2ps: 8 values
// an instruction) where the CPU has them, else common.h's portable conversions. Both round to
// nearest even and give the same bits for every value; a NaN stays a NaN, its payload may
// differ. The casts, --ddp-comm-hook's packing and the MPI sum of fp16 buckets run through here.
#pragma once

#include <cstdint>

namespace mlai::kernels::cpu {

// out[i] = half(in[i] * alpha), the product rounded to float first (alpha 1: a plain cast).
void floats_to_halves(const float* in, uint16_t* out, int64_t n, float alpha = 1.0f);
// out[i] = float(in[i]) * alpha.
void halves_to_floats(const uint16_t* in, float* out, int64_t n, float alpha = 1.0f);
// b[i] = half(float(a[i]) + float(b[i])): each sum rounded once, as NCCL sums halves.
void add_halves(const uint16_t* a, uint16_t* b, int64_t n);

// "f16c" where the F16C path runs, else "portable". use_f16c(false) forces the portable path
// (tests compare the two); use_f16c(true) restores it where the CPU has F16C.
const char* half_conversion_isa();
void use_f16c(bool on);

namespace f16c {  // kernels/half_convert_f16c.cpp; only on x86 CPUs with F16C and AVX
void floats_to_halves(const float* in, uint16_t* out, int64_t n, float alpha);
void halves_to_floats(const uint16_t* in, float* out, int64_t n, float alpha);
void add_halves(const uint16_t* a, uint16_t* b, int64_t n);
}  // namespace f16c

}  // namespace mlai::kernels::cpu
