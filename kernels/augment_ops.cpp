// CPU application of one kernels/augment_ops.h operation to an image: the statistics it needs
// first (integer sums and counts, so the CUDA kernel's atomics agree), then every value; the
// geometric ones work out their source position once per pixel.
#include "kernels/augment_ops.h"

namespace mlai::kernels::cpu {

namespace {
// The statistics `op` reads (integer sums and counts, so the CUDA kernel's atomics agree).
void image_stats(const uint8_t* img, int64_t H, int64_t W, int64_t C, const AugOp& op,
                 ImageStats& st) {
  const int64_t n = H * W;
  if (op.kind == AugOpKind::kContrast) {
    int64_t sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += C == 3 ? gray_of(img + i * C) : img[i * C];
    st.mean = static_cast<float>(sum) / static_cast<float>(n);  // torch.mean: sum / count
  } else if (op.kind == AugOpKind::kAutoContrast) {
    for (int64_t c = 0; c < C; ++c) {
      st.lo[c] = 255;
      st.hi[c] = 0;
    }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const int32_t v = img[i * C + c];
        st.lo[c] = v < st.lo[c] ? v : st.lo[c];
        st.hi[c] = v > st.hi[c] ? v : st.hi[c];
      }
  } else if (op.kind == AugOpKind::kEqualize) {
    for (int64_t c = 0; c < C; ++c) {
      int32_t hist[256] = {};
      for (int64_t i = 0; i < n; ++i) ++hist[img[i * C + c]];
      equalize_lut(hist, st.lut[c]);
    }
  }
}
}  // namespace

void apply_augment_op(const uint8_t* in, uint8_t* out, int64_t H, int64_t W, int64_t C,
                      const AugOp& op) {
  if (op_is_geometric(op.kind)) {  // the source position once per pixel, for every channel
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const GeoSource g = geometric_source(op, H, W, y, x);
        for (int64_t c = 0; c < C; ++c)
          out[(y * W + x) * C + c] = geometric_sample(in, H, W, C, g, c);
      }
    return;
  }
  ImageStats st;
  if (op_needs_stats(op.kind)) image_stats(in, H, W, C, op, st);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c)
        out[(y * W + x) * C + c] = apply_op_at(in, H, W, C, y, x, c, op, st);
}

}  // namespace mlai::kernels::cpu
