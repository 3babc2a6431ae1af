// Tensors: views share storage, casts round as documented, copies, fills, reproducible random
// numbers, devices and their error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tensor/allocator.h"
#include "tensor/ops.h"

namespace mlai::tensor {
namespace {

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor r = t.reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_TRUE(r.same_storage(t));
  Tensor rows = t.reshape({6, 1}).slice(2, 5);
  EXPECT_EQ(rows.shape(), (Shape{3, 1}));
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{2, 3, 4}));
  rows.data<float>()[0] = 42;  // writes through to the parent
  EXPECT_EQ(t.to_vector<float>()[2], 42);
  EXPECT_EQ(Tensor::zeros({2, 3, 4}).flatten(1).shape(), (Shape{2, 12}));
  EXPECT_EQ(Tensor::zeros({2, 3, 4}).flatten(0).shape(), (Shape{24}));
  EXPECT_EQ(t.strides(), (Shape{3, 1}));
}

// ZeRO's sharded masters (nn/zero.h): a released storage keeps its views' shapes, refuses to be
// read, and once reallocated is shared by every view again; CPU tensor memory counts it out.
TEST(Tensor, ReleasedStorageKeepsShapesAndComesBackForEveryView) {
  Tensor flat = Tensor::from_vector(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}, {8});
  Tensor a = flat.slice(0, 6).reshape({2, 3}), b = flat.slice(6, 8);
  const int64_t held = cpu_tensor_stats().current_bytes;
  a.storage()->release();
  EXPECT_TRUE(flat.released() && a.released() && b.released());
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a.numel(), 6);
  EXPECT_LT(cpu_tensor_stats().current_bytes, held);
  EXPECT_THROW(a.to_vector<float>(), std::logic_error);
  EXPECT_THROW((void)b.clone(), std::logic_error);
  a.storage()->release();  // (twice is once)
  flat.storage()->reallocate();
  EXPECT_FALSE(b.released());
  EXPECT_EQ(cpu_tensor_stats().current_bytes, held);
  flat.copy_from(Tensor::from_vector(std::vector<float>{8, 9, 10, 11, 12, 13, 14, 15}, {8}));
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{8, 9, 10, 11, 12, 13}));
  EXPECT_EQ(b.to_vector<float>(), (std::vector<float>{14, 15}));
  b.data<float>()[1] = 42;  // every view over the new memory
  EXPECT_EQ(flat.to_vector<float>()[7], 42);
}

TEST(Tensor, BadViewsAreClearErrors) {
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_THROW(t.reshape({4, 2}), std::invalid_argument);
  EXPECT_THROW(t.reshape({-1, -1}), std::invalid_argument);
  EXPECT_THROW(t.slice(1, 3), std::out_of_range);
  EXPECT_THROW(t.size(2), std::out_of_range);
  EXPECT_THROW(t.data<double>(), std::invalid_argument);
  EXPECT_THROW(Tensor::from_vector(std::vector<float>{1, 2}, {3}), std::invalid_argument);
}

TEST(Tensor, CloneIsADeepCopy) {
  Tensor t = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  Tensor c = t.clone();
  c.data<double>()[0] = 9;
  EXPECT_EQ(t.to_vector<double>()[0], 1);
  EXPECT_FALSE(c.same_storage(t));
  Tensor d = Tensor::empty({2}, DType::kFloat64);
  d.copy_from(t);
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{1, 2}));
  EXPECT_THROW(d.copy_from(Tensor::zeros({3}, DType::kFloat64)), std::invalid_argument);
}

TEST(Tensor, CastsRoundToNearestEven) {
  // 1 + 2^-11 is halfway between two halves: rounds to even (1.0); 1 + 3*2^-11 rounds up.
  Tensor f = Tensor::from_vector(std::vector<float>{1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65520.f,
                                                    -2.5f, 1e-8f},
                                 {5});
  const std::vector<double> h = cast(f, DType::kFloat16).to_double_vector();
  EXPECT_EQ(h[0], 1.0);
  EXPECT_EQ(h[1], 1.0 + 4 * 0x1p-11);
  EXPECT_TRUE(std::isinf(h[2]));  // 65520 overflows half
  EXPECT_EQ(h[3], -2.5);
  EXPECT_NEAR(h[4], 1e-8, 3e-8);  // subnormal range: nearest multiple of 2^-24 (0)
  const std::vector<double> b = cast(f, DType::kBFloat16).to_double_vector();
  EXPECT_EQ(b[3], -2.5);
  EXPECT_EQ(b[0], 1.0);  // bf16 has 7 mantissa bits
  const std::vector<int32_t> i = cast(f, DType::kInt32).to_vector<int32_t>();
  EXPECT_EQ(i[3], -2);  // truncation toward zero
  EXPECT_EQ(cast(cast(f, DType::kFloat64), DType::kFloat32).to_vector<float>(), f.to_vector<float>());
}

// --ddp-comm-hook's packing: x * alpha rounded to float (a float product, exact in double and
// rounded once), then to the 16-bit format as cast() rounds; unpacking the same the other way.
TEST(Tensor, ScaleCastRoundsTheFloatProductThenTheFormat) {
  Generator gen(5);
  const Tensor x = Tensor::uniform({4099}, -3e5, 3e5, gen);  // beyond half's range too
  const float alpha = 1.0f / 3;
  std::vector<float> product;
  for (float v : x.to_vector<float>())
    product.push_back(static_cast<float>(static_cast<double>(v) * alpha));
  const Tensor expected_x = Tensor::from_vector(product, {4099});
  for (DType wire : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(dtype_name(wire));
    Tensor w = Tensor::empty({4099}, wire);
    scale_cast_(x, w, 1.0 / 3);
    const std::vector<double> got = w.to_double_vector();
    EXPECT_EQ(got, cast(expected_x, wire).to_double_vector());
    EXPECT_NE(got, cast(x, wire).to_double_vector());  // alpha was applied
    Tensor back = Tensor::empty({4099}, DType::kFloat32);
    scale_cast_(w, back, 3.0);
    std::vector<float> times3;
    for (double v : got) times3.push_back(static_cast<float>(v * 3.0f));
    EXPECT_EQ(back.to_vector<float>(), times3);
  }
  Tensor wrong = Tensor::empty({4099}, DType::kFloat64);
  EXPECT_THROW(scale_cast_(x, wrong, 1.0), std::invalid_argument);
  Tensor small = Tensor::empty({10}, DType::kFloat16);
  EXPECT_THROW(scale_cast_(x, small, 1.0), std::invalid_argument);
}

TEST(Tensor, HalfConversionIsExactForEveryHalf) {
  // Every finite half converts to float and back to itself.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = kernels::half_to_float(h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(kernels::float_to_half(f), h) << "bits " << bits;
  }
}

// The branch-free conversions against IEEE's definitions, computed here independently: a half
// is (-1)^s x 2^(e-15) x 1.m (e = 0: 2^-14 x 0.m); a float goes to the nearest half, ties to
// the even one, and to inf from 65520 on (half-way to 2^16).
TEST(Tensor, HalfConversionFollowsIeee) {
  std::vector<double> value(0x7c00);  // the finite non-negative halves, in increasing order
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, static_cast<int>(e) - 25);
    const float f = kernels::half_to_float(static_cast<uint16_t>(h));
    if (e == 0x1f) {
      ASSERT_TRUE(m == 0 ? std::isinf(f) : std::isnan(f)) << h;
    } else {
      ASSERT_EQ(f, (h & 0x8000) ? -mag : mag) << h;
      if (h < 0x7c00) value[h] = mag;
    }
  }
  auto nearest = [&](float f) -> uint16_t {  // f finite and >= 0
    if (f >= 65520.0f) return 0x7c00;
    const auto hi = std::lower_bound(value.begin(), value.end(), static_cast<double>(f));
    if (hi == value.end()) return 0x7bff;
    const auto h = static_cast<uint16_t>(hi - value.begin());
    if (h == 0 || *hi == f) return h;
    const double below = f - value[h - 1], above = *hi - f;
    if (below != above) return below < above ? h - 1 : h;
    return (h & 1) ? h - 1 : h;  // a tie: the even one
  };
  auto check = [&](float f) {
    const uint16_t want = nearest(std::fabs(f)) | (std::signbit(f) ? 0x8000 : 0);
    ASSERT_EQ(kernels::float_to_half(f), want) << std::hexfloat << f;
  };
  // Every tie between neighbouring halves and the floats either side of it (the rounding
  // boundaries), the top of the range, and a sweep of every 251st float.
  for (uint32_t h = 0; h + 1 < 0x7c00; ++h) {
    const auto mid = static_cast<float>((value[h] + value[h + 1]) / 2);  // exact in float
    for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      check(f);
      check(-f);
    }
  }
  for (const float f : {65504.0f, 65519.99f, 65520.0f, 1e9f, 0.0f, 0x1p-25f, 0x1p-24f})
    check(f);
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 251) {
    const auto u = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isfinite(f)) check(f);
  }
  // inf stays inf, and a NaN stays a NaN.
  EXPECT_EQ(kernels::float_to_half(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(kernels::float_to_half(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(kernels::float_to_half(std::nanf("")) & 0x7c00, 0x7c00);
  EXPECT_NE(kernels::float_to_half(std::nanf("")) & 0x3ff, 0);
}

TEST(Tensor, FillAndRandomAreReproducible) {
  Tensor z = Tensor::full({3}, 2.5, DType::kBFloat16);
  EXPECT_EQ(z.to_double_vector(), (std::vector<double>{2.5, 2.5, 2.5}));
  Generator g1(5), g2(5), g3(6);
  Tensor a = Tensor::uniform({1000}, -1, 1, g1);
  Tensor b = Tensor::uniform({1000}, -1, 1, g2);
  Tensor c = Tensor::uniform({1000}, -1, 1, g3);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
  // The generator advances: the next draw differs from the first.
  EXPECT_NE(Tensor::uniform({1000}, -1, 1, g1).to_vector<float>(), a.to_vector<float>());
  // Statistics of a large normal sample.
  Generator g(11);
  const std::vector<double> n = Tensor::normal({200000}, 3.0, 2.0, g, DType::kFloat64).to_vector<double>();
  double m = 0, v = 0;
  for (double x : n) m += x;
  m /= static_cast<double>(n.size());
  for (double x : n) v += (x - m) * (x - m);
  v /= static_cast<double>(n.size());
  EXPECT_NEAR(m, 3.0, 0.02);
  EXPECT_NEAR(std::sqrt(v), 2.0, 0.02);
  const std::vector<double> u = Tensor::uniform({100000}, 2, 4, g, DType::kFloat64).to_vector<double>();
  for (double x : u) ASSERT_TRUE(x >= 2 && x < 4);
}

TEST(Device, ParsesAndRejectsClearly) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_EQ(parse_device("auto").is_cuda(), cuda_available());
  try {
    parse_device("tpu");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos);
  }
  EXPECT_THROW(parse_device("cuda:x"), std::invalid_argument);
  if (!cuda_available()) {
    // Asking for a GPU where there is none is an error that says why.
    try {
      parse_device("cuda");
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA is unavailable"), std::string::npos) << e.what();
    }
    EXPECT_THROW(Tensor::zeros({2}, DType::kFloat32, Device::cuda(0)), std::runtime_error);
  }
  EXPECT_THROW(parse_device("cuda:99"), std::runtime_error);
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
}

TEST(Dtype, NamesRoundTrip) {
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64,
                  DType::kInt32, DType::kInt64, DType::kUInt8})
    EXPECT_EQ(dtype_from_name(dtype_name(d)), d);
  EXPECT_THROW(dtype_from_name("float8"), std::invalid_argument);
  EXPECT_EQ(dtype_size(DType::kBFloat16), 2u);
}

}  // namespace
}  // namespace mlai::tensor
