// Batch augmentation: the crop/flip geometry on a known image, normalisation, per-sample
// determinism, the spread of the random choices, and the CUDA kernel against its CPU twin.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

kernels::AugmentParams params(int64_t b, int64_t h, int64_t w, int64_t c, int pad, bool flip) {
  kernels::AugmentParams p;
  p.batch = b;
  p.height = h;
  p.width = w;
  p.channels = c;
  p.pad = pad;
  p.flip = flip;
  p.seed = 17;
  p.epoch = 3;
  for (int64_t k = 0; k < c; ++k) {
    p.mean[k] = 0.25f * static_cast<float>(k);
    p.inv_std[k] = 2.0f;
  }
  return p;
}

Tensor pixels(int64_t b, int64_t h, int64_t w, int64_t c) {
  std::vector<uint8_t> v(static_cast<size_t>(b * h * w * c));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i * 37 + 11) % 251);
  return Tensor::from_vector(v, {b, h, w, c});
}

TEST(Augment, NoAugmentationIsPlainNormalisation) {
  const Tensor px = pixels(3, 4, 5, 2);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  const auto p = params(3, 4, 5, 2, 0, false);
  const auto out = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();
  const auto in = px.to_vector<uint8_t>();
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_NEAR(out[i], (in[i] / 255.0f - p.mean[i % 2]) * 2.0f, 1e-6);
}

TEST(Augment, CropAndFlipMoveThePixelsAsDecided) {
  const int64_t H = 6, W = 7, C = 3, B = 16;
  const Tensor px = pixels(B, H, W, C);
  std::vector<int64_t> idv(B);
  for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = 1000 + i * 13;
  const Tensor ids = Tensor::from_vector(idv, {B});
  const auto p = params(B, H, W, C, 2, true);
  const auto out = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();
  const auto in = px.to_vector<uint8_t>();
  std::set<std::tuple<int, int, bool>> seen;
  for (int64_t b = 0; b < B; ++b) {
    const auto a = kernels::augment_choice(p, idv[static_cast<size_t>(b)]);
    seen.insert({a.dy, a.dx, a.flip});
    ASSERT_LE(std::abs(a.dy), 2);
    ASSERT_LE(std::abs(a.dx), 2);
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t sy = y + a.dy, sx = (a.flip ? W - 1 - x : x) + a.dx;
          const float v = (sy >= 0 && sy < H && sx >= 0 && sx < W)
                              ? in[static_cast<size_t>(((b * H + sy) * W + sx) * C + c)] : 0.0f;
          ASSERT_FLOAT_EQ(out[static_cast<size_t>(((b * H + y) * W + x) * C + c)],
                          (v * (1.0f / 255.0f) - p.mean[c]) * 2.0f);
        }
  }
  EXPECT_GT(seen.size(), 8u);  // the choices vary between samples
}

TEST(Augment, DecisionsDependOnSeedEpochAndSampleOnly) {
  auto p = params(1, 32, 32, 3, 4, true);
  const auto a = kernels::augment_choice(p, 12345);
  const auto b = kernels::augment_choice(p, 12345);
  EXPECT_EQ(std::tie(a.dy, a.dx, a.flip), std::tie(b.dy, b.dx, b.flip));
  int differ = 0, flips = 0;
  for (int64_t i = 0; i < 1000; ++i) {
    const auto x = kernels::augment_choice(p, i);
    p.epoch = 4;
    const auto y = kernels::augment_choice(p, i);
    p.epoch = 3;
    differ += x.dy != y.dy || x.dx != y.dx || x.flip != y.flip;
    flips += x.flip;
  }
  EXPECT_GT(differ, 900);  // another epoch, other decisions
  EXPECT_NEAR(flips, 500, 60);
}

TEST(Augment, CudaMatchesCpuExactly) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  for (int64_t c : {1, 3}) {
    const int64_t B = 37, H = 28, W = 28;
    const Tensor px = pixels(B, H, W, c);
    std::vector<int64_t> idv(B);
    for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = i * 7919;
    const Tensor ids = Tensor::from_vector(idv, {B});
    auto p = params(B, H, W, c, 4, true);
    for (double erase : {0.0, 0.5})  // with RandomErasing too
      for (DType dt : {DType::kFloat32, DType::kFloat16}) {
        p.erase_p = erase;
        const Tensor cpu = augment_normalize(px, ids, p, dt);
        const Tensor gpu_out = augment_normalize(px.to(gpu), ids.to(gpu), p, dt);
        EXPECT_EQ(max_rel_error(gpu_out, cpu), 0.0)
            << dtype_name(dt) << " channels " << c << " erase " << erase;
      }
  }
}

// uint8 output (the crop that --auto-augment works on): the crop's pixel values rounded, on the
// CPU and the GPU alike.
TEST(Augment, Uint8OutputIsTheCropRounded) {
  const int64_t B = 6, H = 9, W = 7, C = 3;
  const Tensor px = pixels(B, H, W, C);
  std::vector<int64_t> idv(B);
  for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = 31 * i + 2;
  const Tensor ids = Tensor::from_vector(idv, {B});
  for (bool rrc : {false, true}) {
    auto p = params(B, H, W, C, 2, true);
    p.resized_crop = rrc;
    for (int64_t c = 0; c < C; ++c) {
      p.mean[c] = 0;
      p.inv_std[c] = 1;
    }
    const auto f = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();  // v / 255
    const auto u = augment_normalize(px, ids, p, DType::kUInt8).to_vector<uint8_t>();
    ASSERT_EQ(f.size(), u.size());
    for (size_t i = 0; i < u.size(); ++i) {
      const float v = f[i] * 255.0f;
      if (rrc)
        ASSERT_LE(std::fabs(u[i] - v), 0.5f + 1e-3f) << i;  // bilinear values, rounded
      else
        ASSERT_EQ(u[i], static_cast<uint8_t>(std::lround(v))) << i;
    }
    if (cuda_available()) {
      const Device gpu = Device::cuda(0);
      EXPECT_EQ(augment_normalize(px.to(gpu), ids.to(gpu), p, DType::kUInt8).to_vector<uint8_t>(),
                u)
          << "rrc " << rrc;
    }
    p.erase_p = 0.5;  // erasing comes after the normalization, never on uint8 pixels
    EXPECT_THROW(augment_normalize(px, ids, p, DType::kUInt8), std::invalid_argument);
  }
}

// RandomErasing: with probability p a box of the drawn share of the area and aspect ratio
// (height / width), inside the image and smaller than it, from a stream of draws of its own
// (the crop and flip decisions do not change when it is switched on).
TEST(RandomErasing, BoxesFollowProbabilityScaleAndRatio) {
  auto p = params(1, 32, 32, 3, 4, true);
  auto plain = p;
  p.erase_p = 0.5;
  int erased = 0;
  double share_sum = 0;
  std::set<std::pair<int64_t, int64_t>> corners;
  for (int64_t i = 0; i < 4000; ++i) {
    const auto a = kernels::augment_choice(p, i), b = kernels::augment_choice(plain, i);
    ASSERT_EQ(std::tie(a.dy, a.dx, a.flip), std::tie(b.dy, b.dx, b.flip));
    EXPECT_EQ(b.eh, 0);
    if (a.eh == 0) continue;
    ++erased;
    ASSERT_TRUE(a.eh < 32 && a.ew < 32 && a.ew > 0) << a.eh << "x" << a.ew;
    ASSERT_TRUE(a.etop >= 0 && a.eleft >= 0 && a.etop + a.eh <= 32 && a.eleft + a.ew <= 32);
    const double share = static_cast<double>(a.eh * a.ew) / 1024.0;
    const double ratio = static_cast<double>(a.eh) / static_cast<double>(a.ew);
    // (h and w are rounded square roots: a little beyond the drawn ranges)
    ASSERT_TRUE(share > 0.01 && share < 0.40) << share;
    ASSERT_TRUE(ratio > 0.3 / 1.6 && ratio < 3.3 * 1.6) << ratio;
    share_sum += share;
    corners.insert({a.etop, a.eleft});
  }
  EXPECT_NEAR(erased, 2000, 150);
  // Uniform shares in [0.02, 0.33] average 0.175; boxes that do not fit are drawn again.
  EXPECT_NEAR(share_sum / erased, 0.175, 0.03);
  EXPECT_GT(corners.size(), 200u);
}

TEST(RandomErasing, ErasesTheBoxToZeroAndLeavesTheRest) {
  const int64_t B = 24, H = 12, W = 10, C = 3;
  const Tensor px = pixels(B, H, W, C);
  std::vector<int64_t> idv(B);
  for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = 500 + 7 * i;
  const Tensor ids = Tensor::from_vector(idv, {B});
  auto p = params(B, H, W, C, 2, true);
  const auto plain = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();
  p.erase_p = 1.0;
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    const auto got = augment_normalize(px, ids, p, dt).to_double_vector();
    int boxes = 0;
    for (int64_t b = 0; b < B; ++b) {
      const auto a = kernels::augment_choice(p, idv[static_cast<size_t>(b)]);
      boxes += a.eh > 0;
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
          for (int64_t c = 0; c < C; ++c) {
            const auto i = static_cast<size_t>(((b * H + y) * W + x) * C + c);
            const bool in_box = kernels::erased(a, y, x);
            const double want = in_box ? 0.0
                                : dt == DType::kFloat32
                                    ? plain[i]
                                    : kernels::bf16_to_float(kernels::float_to_bf16(plain[i]));
            ASSERT_EQ(got[i], want) << "sample " << b << " y " << y << " x " << x;
          }
    }
    EXPECT_GE(boxes, B - 2) << "p = 1 erases unless no box fits in 10 tries";
  }
}

// RandomResizedCrop: a box of the whole image is the identity (plain normalization, flipped
// where the flip bit says).
TEST(ResizedCrop, WholeImageBoxIsTheIdentity) {
  const int64_t B = 6, H = 8, W = 8, C = 3;
  const Tensor px = pixels(B, H, W, C);
  const Tensor ids = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5}, {B});
  auto p = params(B, H, W, C, 0, true);
  p.resized_crop = true;
  p.scale_lo = p.scale_hi = 1.0;
  p.log_ratio_lo = p.log_ratio_hi = 0.0;
  const auto got = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();
  auto plain = p;
  plain.resized_crop = false;
  EXPECT_EQ(got, augment_normalize(px, ids, plain, DType::kFloat32).to_vector<float>());
}

// A quarter of the area at ratio 1 on 8x8 images: 4x4 boxes inside the image, upsampled 2x as
// torch's bilinear (align_corners=False) does, checked against that formula in double.
TEST(ResizedCrop, QuarterBoxesAreUpsampledBilinearly) {
  const int64_t B = 40, H = 8, W = 8, C = 2;
  const Tensor px = pixels(B, H, W, C);
  std::vector<int64_t> idv(B);
  for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = 1000 + 13 * i;
  const Tensor ids = Tensor::from_vector(idv, {B});
  auto p = params(B, H, W, C, 0, false);
  p.resized_crop = true;
  p.scale_lo = p.scale_hi = 0.25;
  p.log_ratio_lo = p.log_ratio_hi = 0.0;
  const auto got = augment_normalize(px, ids, p, DType::kFloat32).to_vector<float>();
  const auto in = px.to_vector<uint8_t>();
  std::set<std::pair<int64_t, int64_t>> corners;
  for (int64_t b = 0; b < B; ++b) {
    const kernels::AugmentChoice a = kernels::augment_choice(p, idv[static_cast<size_t>(b)]);
    ASSERT_EQ(a.h, 4);
    ASSERT_EQ(a.w, 4);
    ASSERT_GE(a.top, 0);
    ASSERT_LE(a.top, 4);
    ASSERT_GE(a.left, 0);
    ASSERT_LE(a.left, 4);
    corners.insert({a.top, a.left});
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        const double ry = std::max(0.5 * (y + 0.5) - 0.5, 0.0), rx = std::max(0.5 * (x + 0.5) - 0.5, 0.0);
        const int64_t y0 = static_cast<int64_t>(ry), x0 = static_cast<int64_t>(rx);
        const int64_t y1 = std::min<int64_t>(y0 + 1, 3), x1 = std::min<int64_t>(x0 + 1, 3);
        const double ly = ry - y0, lx = rx - x0;
        for (int64_t c = 0; c < C; ++c) {
          auto at = [&](int64_t yy, int64_t xx) {
            return static_cast<double>(in[static_cast<size_t>(((b * H + a.top + yy) * W + a.left + xx) * C + c)]);
          };
          const double v = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
                           ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
          const double want = (v / 255.0 - p.mean[c]) * p.inv_std[c];
          ASSERT_NEAR(got[static_cast<size_t>(((b * H + y) * W + x) * C + c)], want, 1e-5)
              << "sample " << b << " at " << y << "," << x << "," << c;
        }
      }
  }
  EXPECT_GT(corners.size(), 10u);  // the boxes move around
}

// The share of the area and the aspect ratio stay in their ranges (up to the rounding of the
// sides); a ratio no box can have in the image falls back to torchvision's central crop.
TEST(ResizedCrop, BoxesFollowScaleAndRatioAndFallBackToTheCentre) {
  auto p = params(1, 32, 24, 3, 0, false);
  p.resized_crop = true;
  p.scale_lo = 0.2;
  p.scale_hi = 0.6;
  p.log_ratio_lo = std::log(0.5);
  p.log_ratio_hi = std::log(2.0);
  for (int64_t id = 0; id < 2000; ++id) {
    const auto a = kernels::augment_choice(p, id);
    ASSERT_GE(a.top, 0);
    ASSERT_LE(a.top + a.h, 32);
    ASSERT_GE(a.left, 0);
    ASSERT_LE(a.left + a.w, 24);
    const double share = static_cast<double>(a.h * a.w) / (32 * 24);
    EXPECT_GT(share, 0.2 * 0.75) << id;
    EXPECT_LT(share, 0.6 * 1.25) << id;
  }
  auto q = params(1, 8, 8, 1, 0, false);
  q.resized_crop = true;
  q.scale_lo = q.scale_hi = 1.0;
  q.log_ratio_lo = q.log_ratio_hi = std::log(4.0);  // 16 x 4 boxes never fit an 8 x 8 image
  const auto f = kernels::augment_choice(q, 3);
  EXPECT_EQ(f.w, 8);
  EXPECT_EQ(f.h, 2);  // round(8 / 4)
  EXPECT_EQ(f.top, 3);
  EXPECT_EQ(f.left, 0);
}

TEST(ResizedCrop, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  const int64_t B = 37, H = 32, W = 32, C = 3;
  const Tensor px = pixels(B, H, W, C);
  std::vector<int64_t> idv(B);
  for (int64_t i = 0; i < B; ++i) idv[static_cast<size_t>(i)] = i * 7919;
  const Tensor ids = Tensor::from_vector(idv, {B});
  auto p = params(B, H, W, C, 0, true);
  p.resized_crop = true;
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    const Tensor cpu = augment_normalize(px, ids, p, dt);
    const Tensor dev = augment_normalize(px.to(gpu), ids.to(gpu), p, dt);
    // The same boxes (double draws without FMA; exp may differ by an ulp, which moves a box
    // only if a side lands within ~1e-14 of a half) and rounded float blends: the same bits.
    EXPECT_EQ(max_rel_error(dev, cpu), 0.0) << dtype_name(dt);
  }
}

// MixUp and CutMix (torchvision v2): sample b mixed with sample b - 1 (0 with the last).
kernels::MixParams mix_params(int64_t b, int64_t h, int64_t w, int64_t c, float lambda) {
  kernels::MixParams p;
  p.batch = b;
  p.height = h;
  p.width = w;
  p.channels = c;
  p.lambda = lambda;
  p.one_minus_lambda = 1.0f - lambda;
  return p;
}
Tensor random_images(int64_t b, int64_t h, int64_t w, int64_t c, DType dt, uint64_t seed) {
  Generator g(seed);
  return Tensor::uniform({b, h, w, c}, -2, 2, g).to(dt);
}

TEST(MixBatch, MixUpBlendsEachSampleWithThePreviousOne) {
  const int64_t B = 5, H = 3, W = 4, C = 2, image = H * W * C;
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Tensor x = random_images(B, H, W, C, dt, 7);
    const float lam = 0.3f;
    const auto got = mix_batch(x, mix_params(B, H, W, C, lam)).to_double_vector();
    const auto in = x.to_double_vector();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t prev = (b + B - 1) % B;
      for (int64_t i = 0; i < image; ++i) {
        const float kept = lam * static_cast<float>(in[b * image + i]);
        const float taken = (1.0f - lam) * static_cast<float>(in[prev * image + i]);
        const double want = Tensor::full({}, kept + taken).to(dt).item();  // rounded to dt
        ASSERT_EQ(got[b * image + i], want) << dtype_name(dt) << " sample " << b << " " << i;
      }
    }
  }
}

TEST(MixBatch, CutMixPastesTheBoxFromThePreviousSample) {
  const int64_t B = 4, H = 6, W = 7, C = 3;
  const Tensor x = random_images(B, H, W, C, DType::kFloat32, 9);
  auto p = mix_params(B, H, W, C, 0.5f);
  p.cut = true;
  p.y1 = 1, p.y2 = 4, p.x1 = 2, p.x2 = 7;  // a box reaching the right edge
  const auto got = mix_batch(x, p).to_vector<float>();
  const auto in = x.to_vector<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx)
        for (int64_t c = 0; c < C; ++c) {
          const bool inside = y >= 1 && y < 4 && xx >= 2 && xx < 7;
          const int64_t src = inside ? (b + B - 1) % B : b;
          ASSERT_EQ(got[((b * H + y) * W + xx) * C + c], in[((src * H + y) * W + xx) * C + c])
              << b << " " << y << " " << xx << " " << c;
        }
  p.x2 = 8;  // past the image
  EXPECT_THROW(mix_batch(x, p), std::invalid_argument);
  EXPECT_THROW(mix_batch(x, mix_params(B + 1, H, W, C, 0.5f)), std::invalid_argument);
}

TEST(MixBatch, RollRowsIsTorchRollByOne) {
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{10, 11, 12, 13}, {4});
  EXPECT_EQ(roll_rows(t).to_vector<int64_t>(), (std::vector<int64_t>{13, 10, 11, 12}));
  const Tensor one = Tensor::from_vector(std::vector<int64_t>{5}, {1});
  EXPECT_EQ(roll_rows(one).to_vector<int64_t>(), (std::vector<int64_t>{5}));
  EXPECT_THROW(roll_rows(Tensor::full({}, 1.0)), std::invalid_argument);
}

TEST(MixBatch, CudaMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  const Device gpu = Device::cuda(0);
  const int64_t B = 37, H = 32, W = 32, C = 3;
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Tensor x = random_images(B, H, W, C, dt, 11);
    for (bool cut : {false, true}) {
      auto p = mix_params(B, H, W, C, 0.37f);
      p.cut = cut;
      p.y1 = 3, p.y2 = 20, p.x1 = 0, p.x2 = 13;
      const Tensor cpu = mix_batch(x, p), dev = mix_batch(x.to(gpu), p);
      // Rounded products and sum on both (no FMA): the same bits.
      EXPECT_EQ(max_rel_error(dev, cpu), 0.0) << dtype_name(dt) << (cut ? " cutmix" : " mixup");
    }
    EXPECT_EQ(roll_rows(x.to(gpu)).to(Device::cpu()).to_double_vector(),
              roll_rows(x).to_double_vector());
  }
}

}  // namespace
}  // namespace mlai::tensor
