// CPU max pooling over NHWC images; the window walk runs over whole channel vectors (the
// contiguous NHWC axis), keeping each channel's running maximum and its flat input index.
#include "kernels/pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mlai::kernels::cpu {

template <class T>
void maxpool2d_forward(const T* x, T* y, int64_t* argmax, const Pool2dGeometry& g) {
  const int64_t oh = g.out_h(), ow = g.out_w();
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t out = ((b * oh + oy) * ow + ox) * g.c;
        T* best = y + out;
        int64_t* where = argmax + out;
        // Padding is -inf: it never wins, so it is simply skipped. A window made only of
        // padding (impossible when pad <= k / 2, which PyTorch requires) leaves -inf and -1.
        std::fill_n(best, g.c, -std::numeric_limits<T>::infinity());
        std::fill_n(where, g.c, int64_t{-1});
        for (int64_t i = 0; i < g.k; ++i) {
          const int64_t iy = oy * g.stride - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t j = 0; j < g.k; ++j) {
            const int64_t ix = ox * g.stride - g.pad + j;
            if (ix < 0 || ix >= g.w) continue;
            const int64_t in = ((b * g.h + iy) * g.w + ix) * g.c;
            for (int64_t ch = 0; ch < g.c; ++ch) {
              const T v = x[in + ch];
              // Strictly greater: the first maximum wins ties. nan always takes over (PyTorch's
              // rule), so a nan anywhere in the window gives nan.
              if (v > best[ch] || std::isnan(v)) {
                best[ch] = v;
                where[ch] = in + ch;
              }
            }
          }
        }
      }
}

template <class T>
void maxpool2d_backward(const T* dy, const int64_t* argmax, T* dx, const Pool2dGeometry& g) {
  std::fill_n(dx, g.n * g.h * g.w * g.c, T(0));
  const int64_t outputs = g.n * g.out_h() * g.out_w() * g.c;
  // Overlapping windows (k > stride) can pick the same input: its gradients add up.
  for (int64_t i = 0; i < outputs; ++i)
    if (argmax[i] >= 0) dx[argmax[i]] += dy[i];
}

#define MLAI_INSTANTIATE(T)                                                          \
  template void maxpool2d_forward<T>(const T*, T*, int64_t*, const Pool2dGeometry&); \
  template void maxpool2d_backward<T>(const T*, const int64_t*, T*, const Pool2dGeometry&);
MLAI_INSTANTIATE(float)
MLAI_INSTANTIATE(double)
#undef MLAI_INSTANTIATE

}  // namespace mlai::kernels::cpu
