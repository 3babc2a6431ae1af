// PIL's separable resampling (Resample.c), written afresh for the bilinear filter: per output
// position, the input span and its fixed-point weights; then one pass per axis that changes,
// the vertical one as weighted sums of whole rows (contiguous, vectorized).
#include "io/image_resize.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mlai::io {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's: room for 8-bit pixels times weights

// For each output position along one axis: the first input index, how many follow, and their
// weights (kPrecisionBits fixed point).
struct Taps {
  int64_t stride = 0;  // weights per output position
  std::vector<int64_t> first, count;
  std::vector<int32_t> weight;  // out_size * stride
};

Taps bilinear_taps(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);  // shrinking widens the filter
  const double support = 1.0 * filter_scale;         // the triangle's half-width, 1 at scale 1
  Taps t;
  t.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(out_size));
  t.count.resize(static_cast<size_t>(out_size));
  t.weight.assign(static_cast<size_t>(out_size * t.stride), 0);
  std::vector<double> w(static_cast<size_t>(t.stride));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = (static_cast<double>(o) + 0.5) * scale;
    // Truncation toward zero, then clamping, as PIL rounds the span's ends.
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t n = hi - lo;
    double sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double x = std::fabs((static_cast<double>(k + lo) - center + 0.5) / filter_scale);
      w[static_cast<size_t>(k)] = x < 1.0 ? 1.0 - x : 0.0;
      sum += w[static_cast<size_t>(k)];
    }
    for (int64_t k = 0; k < n; ++k) {
      const double v = sum != 0.0 ? w[static_cast<size_t>(k)] / sum : w[static_cast<size_t>(k)];
      const double fixed = v * static_cast<double>(1 << kPrecisionBits);
      t.weight[static_cast<size_t>(o * t.stride + k)] =
          static_cast<int32_t>(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    t.first[static_cast<size_t>(o)] = lo;
    t.count[static_cast<size_t>(o)] = n;
  }
  return t;
}

// PIL's accumulator is a 32-bit int: 255 times weights summing to 2^22, plus the rounding
// half, fits.
inline uint8_t clip8(int32_t v) {
  if (v >= (int32_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// Along each row: h rows of w pixels of C bytes -> h rows of ow pixels (C fixed at compile
// time for 1 and 3 channels, so the channel loop unrolls; 0: `c` at run time).
template <int C>
void resample_rows(const uint8_t* in, uint8_t* out, const Taps& t, int64_t h, int64_t w, int64_t ow,
                   int64_t c_any) {
  const int64_t c = C > 0 ? C : c_any;
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* row = in + y * w * c;
    uint8_t* dst = out + y * ow * c;
    for (int64_t o = 0; o < ow; ++o) {
      const int32_t* wt = &t.weight[static_cast<size_t>(o * t.stride)];
      const uint8_t* src = row + t.first[static_cast<size_t>(o)] * c;
      const int64_t n = t.count[static_cast<size_t>(o)];
      if constexpr (C > 0) {  // the channels side by side: C independent sums per tap
        int32_t acc[C];
        for (int ch = 0; ch < C; ++ch) acc[ch] = int32_t{1} << (kPrecisionBits - 1);
        for (int64_t k = 0; k < n; ++k)
          for (int ch = 0; ch < C; ++ch) acc[ch] += static_cast<int32_t>(src[k * C + ch]) * wt[k];
        for (int ch = 0; ch < C; ++ch) dst[o * C + ch] = clip8(acc[ch]);
      } else {
        for (int64_t ch = 0; ch < c; ++ch) {
          int32_t acc = int32_t{1} << (kPrecisionBits - 1);
          for (int64_t k = 0; k < n; ++k) acc += static_cast<int32_t>(src[k * c + ch]) * wt[k];
          dst[o * c + ch] = clip8(acc);
        }
      }
    }
  }
}

// Along each column: h rows of `row` bytes -> oh rows. Each output row is a weighted sum of
// whole input rows, so the inner loop runs along contiguous bytes (and vectorizes).
void resample_columns(const uint8_t* in, uint8_t* out, const Taps& t, int64_t row, int64_t oh) {
  std::vector<int32_t> acc(static_cast<size_t>(row));
  for (int64_t o = 0; o < oh; ++o) {
    std::fill(acc.begin(), acc.end(), int32_t{1} << (kPrecisionBits - 1));
    const int32_t* wt = &t.weight[static_cast<size_t>(o * t.stride)];
    const int64_t first = t.first[static_cast<size_t>(o)], n = t.count[static_cast<size_t>(o)];
    for (int64_t k = 0; k < n; ++k) {
      const uint8_t* src = in + (first + k) * row;
      const int32_t wk = wt[k];
      for (int64_t x = 0; x < row; ++x) acc[static_cast<size_t>(x)] += src[x] * wk;
    }
    uint8_t* dst = out + o * row;
    for (int64_t x = 0; x < row; ++x) dst[x] = clip8(acc[static_cast<size_t>(x)]);
  }
}

}  // namespace

std::vector<uint8_t> resize_bilinear(const std::vector<uint8_t>& in, int64_t ih, int64_t iw,
                                     int64_t c, int64_t oh, int64_t ow) {
  if (ih < 1 || iw < 1 || oh < 1 || ow < 1 || c < 1 ||
      in.size() != static_cast<size_t>(ih * iw * c))
    throw std::invalid_argument("resize_bilinear: bad sizes");
  std::vector<uint8_t> cur = in;
  int64_t h = ih, w = iw;
  auto horizontal = [&] {
    std::vector<uint8_t> next(static_cast<size_t>(h * ow * c));
    const Taps taps = bilinear_taps(iw, ow);
    if (c == 3)
      resample_rows<3>(cur.data(), next.data(), taps, h, w, ow, c);
    else if (c == 1)
      resample_rows<1>(cur.data(), next.data(), taps, h, w, ow, c);
    else
      resample_rows<0>(cur.data(), next.data(), taps, h, w, ow, c);
    cur.swap(next);
    w = ow;
  };
  auto vertical = [&] {
    std::vector<uint8_t> next(static_cast<size_t>(oh * w * c));
    resample_columns(cur.data(), next.data(), bilinear_taps(ih, oh), w * c, oh);
    cur.swap(next);
    h = oh;
  };
  // Pillow's order (13): vertical first when the height shrinks by more than twice as many
  // pixels as the width does, horizontal first otherwise. (The rounding between the passes
  // makes the order show in the last bit.)
  const bool vertical_first = ih - oh > 0 && ih - oh > 2 * (iw - ow);
  if (vertical_first && oh != ih) vertical();
  if (ow != iw) horizontal();
  if (!vertical_first && oh != ih) vertical();
  return cur;
}

}  // namespace mlai::io
