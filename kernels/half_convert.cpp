// Dispatch and portable path of kernels/half_convert.h.
#include "kernels/half_convert.h"

#include <atomic>

#include "kernels/common.h"

namespace mlai::kernels::cpu {

namespace {
bool cpu_has_f16c() {
#if defined(MLAI_X86_F16C)
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
#else
  return false;
#endif
}
std::atomic<bool>& f16c_on() {
  static std::atomic<bool> on{cpu_has_f16c()};
  return on;
}
}  // namespace

const char* half_conversion_isa() { return f16c_on().load() ? "f16c" : "portable"; }
void use_f16c(bool on) { f16c_on().store(on && cpu_has_f16c()); }

void floats_to_halves(const float* in, uint16_t* out, int64_t n, float alpha) {
#if defined(MLAI_X86_F16C)
  if (f16c_on().load(std::memory_order_relaxed)) return f16c::floats_to_halves(in, out, n, alpha);
#endif
  if (alpha == 1.0f) {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(in[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(in[i] * alpha);
  }
}

void halves_to_floats(const uint16_t* in, float* out, int64_t n, float alpha) {
#if defined(MLAI_X86_F16C)
  if (f16c_on().load(std::memory_order_relaxed)) return f16c::halves_to_floats(in, out, n, alpha);
#endif
  if (alpha == 1.0f) {
    for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(in[i]) * alpha;
  }
}

void add_halves(const uint16_t* a, uint16_t* b, int64_t n) {
#if defined(MLAI_X86_F16C)
  if (f16c_on().load(std::memory_order_relaxed)) return f16c::add_halves(a, b, n);
#endif
  for (int64_t i = 0; i < n; ++i) b[i] = float_to_half(half_to_float(a[i]) + half_to_float(b[i]));
}

}  // namespace mlai::kernels::cpu
