// Shared by the CPU kernel tests that compare against loops in double: random vectors, rounding
// through a storage type, and the error relative to a result's scale.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace mlai::kernels::reference {

using Vec = std::vector<double>;

inline Vec random_vec(int64_t n, uint32_t seed, double lo = -1, double hi = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(static_cast<size_t>(n));
  for (double& e : v) e = dist(rng);
  return v;
}
template <class T>
std::vector<T> to(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}
template <class T>
Vec widen(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}
// Rounds through T, so a reference computed in double sees exactly the kernel's inputs.
template <class T>
Vec through(const Vec& v) {
  return widen(to<T>(v));
}
// max |a - ref| / max |ref|: error relative to the scale of the result.
inline double rel_err(const Vec& a, const Vec& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return err / scale;
}

}  // namespace mlai::kernels::reference
