// torchvision's TrivialAugmentWide / RandAugment / AutoAugment (kernels/auto_augment.h): each
// operation on images whose result is worked out by hand, every operation against torchvision
// itself on random images (when torch is installed), the plans' spread over the policies, their
// determinism, and the CUDA kernel against its CPU twin.
#include "kernels/auto_augment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/fused_ops.h"
#include "tensor/ops.h"

namespace mlai::kernels {
namespace {

using K = AugOpKind;
using Image = std::vector<uint8_t>;

Image run(const Image& in, int64_t H, int64_t W, int64_t C, K kind, double magnitude,
          bool bilinear = false) {
  Image out(in.size());
  cpu::apply_augment_op(in.data(), out.data(), H, W, C, make_op(kind, magnitude, H, W, bilinear));
  return out;
}

Image ramp(int64_t H, int64_t W, int64_t C) {
  Image v(static_cast<size_t>(H * W * C));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>((i * 37 + 11) % 251);
  return v;
}

TEST(AutoAugmentOps, PixelOperations) {
  const Image in{0, 17, 100, 127, 128, 200, 238, 255};
  const Image post = run(in, 1, 8, 1, K::kPosterize, 4.0);  // keep 4 bits
  const Image sol = run(in, 1, 8, 1, K::kSolarize, 128.0);  // invert from 128 up
  const Image inv = run(in, 1, 8, 1, K::kInvert, 0.0);
  const Image bright = run(in, 1, 8, 1, K::kBrightness, 0.5);  // factor 1.5, truncated
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(post[i], in[i] & 0xf0);
    EXPECT_EQ(sol[i], in[i] >= 128 ? 255 - in[i] : in[i]);
    EXPECT_EQ(inv[i], 255 - in[i]);
    EXPECT_EQ(bright[i], std::min(255, static_cast<int>(in[i] * 1.5)));
  }
  EXPECT_EQ(run(in, 1, 8, 1, K::kPosterize, 8.0), in);
  EXPECT_EQ(run(in, 1, 8, 1, K::kPosterize, 0.0), Image(8, 0));  // AugMix's severest bin
  EXPECT_EQ(run(in, 1, 8, 1, K::kIdentity, 0.0), in);
}

TEST(AutoAugmentOps, WholeImageOperations) {
  // Contrast blends with the mean (here 100): factor 2 doubles the distance, 0.5 halves it.
  const Image two{0, 200, 0, 200};
  EXPECT_EQ(run(two, 2, 2, 1, K::kContrast, 1.0), (Image{0, 255, 0, 255}));
  EXPECT_EQ(run(two, 2, 2, 1, K::kContrast, -0.5), (Image{50, 150, 50, 150}));
  // AutoContrast stretches each channel's [min, max] to [0, 255] (truncated); a flat channel
  // stays. Channel 0 spans 50..150, channel 1 is 7 throughout.
  const Image ac = run(Image{50, 7, 100, 7, 150, 7, 125, 7}, 1, 4, 2, K::kAutoContrast, 0);
  EXPECT_EQ(ac, (Image{0, 7, 127, 7, 255, 7, 191, 7}));
  // Equalize: 300 pixels of 50 and 300 of 60 (step (600 - 300) / 255 = 1) go to 0 and 255.
  Image eq(600);
  for (size_t i = 0; i < eq.size(); ++i) eq[i] = i % 2 ? 60 : 50;
  const Image e = run(eq, 20, 30, 1, K::kEqualize, 0);
  for (size_t i = 0; i < e.size(); ++i) ASSERT_EQ(e[i], i % 2 ? 255 : 0) << i;
  // Too few pixels outside the top value (step 0): unchanged.
  EXPECT_EQ(run(Image{1, 2, 3, 4}, 2, 2, 1, K::kEqualize, 0), (Image{1, 2, 3, 4}));
}

TEST(AutoAugmentOps, ColorAndSharpness) {
  // Saturation 0 (magnitude -1) is the grayscale value, trunc(0.2989 r + 0.587 g + 0.114 b).
  EXPECT_EQ(run(Image{255, 0, 0}, 1, 1, 3, K::kColor, -1.0), (Image{76, 76, 76}));
  EXPECT_EQ(run(Image{10, 200, 30}, 1, 1, 3, K::kColor, -1.0), (Image{123, 123, 123}));
  EXPECT_EQ(run(Image{10, 200}, 1, 2, 1, K::kColor, -1.0), (Image{10, 200}));  // gray: unchanged
  // Sharpness: a 3x3 image, one bright centre. Blurred, the centre is round(5 x 130 / 13) = 50;
  // factor 0 gives the blur, factor 2 twice the centre less the blur. The border never changes.
  Image dot(9, 0);
  dot[4] = 130;
  Image blur = dot;
  blur[4] = 50;
  EXPECT_EQ(run(dot, 3, 3, 1, K::kSharpness, -1.0), blur);
  Image sharp = dot;
  sharp[4] = 210;
  EXPECT_EQ(run(dot, 3, 3, 1, K::kSharpness, 1.0), sharp);
}

TEST(AutoAugmentOps, GeometricOperations) {
  const int64_t H = 6, W = 6, C = 2;
  const Image in = ramp(H, W, C);
  auto at = [&](const Image& im, int64_t y, int64_t x, int64_t c) {
    return im[static_cast<size_t>((y * W + x) * C + c)];
  };
  // TranslateX 3 moves the picture 3 pixels right, TranslateY -2 two up; the rest is 0.
  const Image tx = run(in, H, W, C, K::kTranslateX, 3.7);  // int(3.7) = 3
  const Image ty = run(in, H, W, C, K::kTranslateY, -2.0);
  // Rotate 90 turns it a quarter counter-clockwise (torch.rot90(img, 1, [-2, -1])).
  const Image rot = run(in, H, W, C, K::kRotate, 90.0);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < C; ++c) {
        EXPECT_EQ(at(tx, y, x, c), x >= 3 ? at(in, y, x - 3, c) : 0);
        EXPECT_EQ(at(ty, y, x, c), y + 2 < H ? at(in, y + 2, x, c) : 0);
        EXPECT_EQ(at(rot, y, x, c), at(in, x, W - 1 - y, c));
      }
  // Bilinear (AugMix's): an integer shift is the same as the nearest pixel's; half a pixel's
  // shear on row 0 (x + 1/4) blends each pixel with its right neighbour 3:1, rounded (within
  // float rounding of a half either way).
  EXPECT_EQ(run(in, H, W, C, K::kTranslateX, 3.0, true), tx);
  const Image bl = run(in, H, W, C, K::kShearX, 0.5, true);
  for (int64_t x = 0; x + 1 < W; ++x)
    EXPECT_NEAR(at(bl, 0, x, 0), 0.75 * at(in, 0, x, 0) + 0.25 * at(in, 0, x + 1, 0), 0.5 + 1e-4)
        << x;
  // ShearX m, about the top-left corner: row y reads x + m (y + 1/2), rounded to nearest.
  const Image sh = run(in, H, W, C, K::kShearX, 0.5);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      const auto sx = static_cast<int64_t>(std::nearbyint(x + 0.5 * (y + 0.5)));
      EXPECT_EQ(at(sh, y, x, 1), sx < W ? at(in, y, sx, 1) : 0) << y << "," << x;
    }
}

// Every operation against torchvision's own _apply_op (test/kernels/
// torchvision_augment_reference.py) on random images of 1 and 3 channels and even, odd and
// non-square sizes, at a spread of magnitudes. The pixel operations agree exactly. So do the
// geometric ones here, nearest and bilinear (mlai sums the float32 grid as torch's CPU matrix
// product does on this machine, with a fused multiply-add); a BLAS that sums it otherwise
// moves a source coordinate within an ulp of a half to the neighbouring pixel (or a bilinear
// value within an ulp of a half to the other integer), so they may differ in 0.5% of values.
TEST(AutoAugmentOps, MatchTorchvision) {
  char tmpl[] = "/tmp/mlai_auto_augment_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  struct Remove {
    std::filesystem::path p;
    ~Remove() { std::filesystem::remove_all(p); }
    const std::filesystem::path& path() const { return p; }
  } dir{tmpl};
  const char* py = std::getenv("MLAI_TORCH_PYTHON");
  const std::string cmd = std::string(py ? py : "python3") + " '" + MLAI_SOURCE_DIR +
                          "/test/kernels/torchvision_augment_reference.py' '" +
                          dir.path().string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
    GTEST_SKIP() << "torch/torchvision are not installed for python3 (set MLAI_TORCH_PYTHON to a "
                    "python that has them)";
  ASSERT_EQ(status, 0) << cmd;
  const std::map<std::string, K> kinds{{"Identity", K::kIdentity},
                                       {"ShearX", K::kShearX},
                                       {"ShearY", K::kShearY},
                                       {"TranslateX", K::kTranslateX},
                                       {"TranslateY", K::kTranslateY},
                                       {"Rotate", K::kRotate},
                                       {"Brightness", K::kBrightness},
                                       {"Color", K::kColor},
                                       {"Contrast", K::kContrast},
                                       {"Sharpness", K::kSharpness},
                                       {"Posterize", K::kPosterize},
                                       {"Solarize", K::kSolarize},
                                       {"AutoContrast", K::kAutoContrast},
                                       {"Equalize", K::kEqualize},
                                       {"Invert", K::kInvert}};
  std::ifstream manifest(dir.path() / "manifest.tsv");
  std::string line;
  int cases = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> geometric;  // op: (differing, pixels)
  while (std::getline(manifest, line)) {
    std::istringstream f(line);
    std::string name, op, interp;
    double mag = 0;
    int64_t C = 0, H = 0, W = 0;
    f >> name >> op >> mag >> C >> H >> W >> interp;
    ASSERT_TRUE(kinds.count(op)) << op;
    auto read = [&](const std::string& ext) {
      std::ifstream in(dir.path() / (name + ext), std::ios::binary);
      Image v(static_cast<size_t>(H * W * C));
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size()));
      EXPECT_TRUE(in.good()) << name << ext;
      return v;
    };
    const Image in = read(".in"), want = read(".out");
    const Image got = run(in, H, W, C, kinds.at(op), mag, interp == "bilinear");
    int64_t diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff += got[i] != want[i];
    const K k = kinds.at(op);
    const bool geo = k == K::kShearX || k == K::kShearY || k == K::kTranslateX ||
                     k == K::kTranslateY || k == K::kRotate;
    if (geo) {
      geometric[op + "/" + interp].first += diff;
      geometric[op + "/" + interp].second += static_cast<int64_t>(got.size());
    } else {
      EXPECT_EQ(diff, 0) << op << " " << mag << " on " << C << "x" << H << "x" << W;
    }
    ++cases;
  }
  EXPECT_GE(cases, 300);
  for (const auto& [op, d] : geometric) {
    std::printf("%s: %lld of %lld values differ from torchvision\n", op.c_str(),
                static_cast<long long>(d.first), static_cast<long long>(d.second));
    EXPECT_LE(d.first, d.second / 200) << op;
  }
}

std::map<K, int> count_kinds(const AutoAugmentParams& p, int n, std::vector<int>* counts) {
  std::map<K, int> kinds;
  for (int i = 0; i < n; ++i) {
    const AutoAugmentPlan plan = auto_augment_plan(p, i);
    if (counts) counts->push_back(plan.count);
    for (int k = 0; k < plan.count; ++k) ++kinds[plan.ops[k].kind];
  }
  return kinds;
}

TEST(AutoAugmentPlans, FollowThePolicies) {
  AutoAugmentParams p;
  p.height = p.width = 32;
  p.channels = 3;
  p.seed = 5;
  p.epoch = 2;
  const int n = 14000;
  // TrivialAugmentWide: one of its 14 operations each, evenly.
  p.policy = AutoAugmentPolicy::kTrivialAugmentWide;
  std::vector<int> counts;
  auto kinds = count_kinds(p, n, &counts);
  EXPECT_EQ(kinds.size(), 14u);
  EXPECT_EQ(kinds.count(K::kInvert), 0u);
  for (const auto& [k, c] : kinds) EXPECT_NEAR(c, n / 14, 150) << static_cast<int>(k);
  for (int c : counts) ASSERT_EQ(c, 1);
  // Its rotations take every bin of 0..135 degrees, both ways: the coefficient cos(angle) / 16.
  std::map<int, int> angles;
  for (int i = 0; i < n; ++i) {
    const AugOp op = auto_augment_plan(p, i).ops[0];
    if (op.kind != K::kRotate) continue;
    const double deg = std::acos(std::max(-1.0, std::min(1.0, op.coef[0] * 16.0))) * 180 / M_PI;
    const double sin_sign = op.coef[1] >= 0 ? 1 : -1;
    ++angles[static_cast<int>(std::lround(sin_sign * deg / 4.5))];
  }
  EXPECT_EQ(angles.size(), 61u);  // bins -30..30 (0 from both signs)
  // RandAugment: num_ops operations each, from the same 14.
  p.policy = AutoAugmentPolicy::kRandAugment;
  p.num_ops = 3;
  counts.clear();
  kinds = count_kinds(p, n, &counts);
  EXPECT_EQ(kinds.size(), 14u);
  for (int c : counts) ASSERT_EQ(c, 3);
  for (const auto& [k, c] : kinds) EXPECT_NEAR(c, 3 * n / 14, 300) << static_cast<int>(k);
  // AutoAugment: a sub-policy's two steps, each with its probability: the mean count of
  // operations is the policies' mean of p1 + p2.
  for (AutoAugmentPolicy pol :
       {AutoAugmentPolicy::kImageNet, AutoAugmentPolicy::kCifar10, AutoAugmentPolicy::kSvhn}) {
    p.policy = pol;
    double want = 0;
    for (int s = 0; s < 25; ++s)
      want += auto_augment_step(pol, s, 0).p + auto_augment_step(pol, s, 1).p;
    want /= 25;
    counts.clear();
    kinds = count_kinds(p, n, &counts);
    double mean = 0;
    for (int c : counts) mean += c;
    mean /= n;
    EXPECT_NEAR(mean, want, 0.03) << static_cast<int>(pol);
    EXPECT_EQ(kinds.count(K::kIdentity), 0u);
  }
  EXPECT_GT(kinds[K::kInvert], 0);  // SVHN's favourite
}

// AugMix: three chains of 1 to 3 operations (evenly) from its 13, bilinear; the original's
// weight uniform in [0, 1) and the chains' weights splitting the rest (Dirichlet(1, 1, 1): each
// share has mean 1/3).
TEST(AutoAugmentPlans, AugMixChainsAndWeights) {
  AutoAugmentParams p;
  p.height = p.width = 32;
  p.channels = 3;
  p.policy = AutoAugmentPolicy::kAugMix;
  p.seed = 21;
  const int n = 9000;
  std::map<int, int> depths;
  std::map<K, int> kinds;
  double keep_sum = 0, share0_sum = 0;
  for (int i = 0; i < n; ++i) {
    const AutoAugmentPlan plan = auto_augment_plan(p, i);
    ASSERT_EQ(plan.chains, 3);
    ASSERT_EQ(plan.chain_begin[0], 0);
    ASSERT_EQ(plan.chain_begin[3], plan.count);
    float total = plan.keep;
    for (int c = 0; c < 3; ++c) {
      ++depths[plan.chain_begin[c + 1] - plan.chain_begin[c]];
      ASSERT_GE(plan.weight[c], 0.0f);
      total += plan.weight[c];
    }
    ASSERT_NEAR(total, 1.0f, 1e-6f);
    keep_sum += plan.keep;
    if (plan.keep < 0.999f) share0_sum += plan.weight[0] / (1.0f - plan.keep);
    for (int k = 0; k < plan.count; ++k) {
      ++kinds[plan.ops[k].kind];
      ASSERT_EQ(plan.ops[k].bilinear, 1);
    }
  }
  EXPECT_EQ(depths.size(), 3u);
  for (const auto& [d, c] : depths) EXPECT_NEAR(c, n, 300) << d;  // 3 chains x n / 3 depths
  EXPECT_EQ(kinds.size(), 13u);
  EXPECT_EQ(kinds.count(K::kIdentity) + kinds.count(K::kInvert), 0u);
  EXPECT_NEAR(keep_sum / n, 0.5, 0.01);
  EXPECT_NEAR(share0_sum / n, 1.0 / 3.0, 0.01);
}

// AugMix's mix: keep x the image plus each chain's weight x the chain's result, in float32 in
// that order, truncated.
TEST(AutoAugmentPlans, AugMixMixesTheChainsWithTheImage) {
  AutoAugmentParams p;
  p.batch = 8;
  p.height = 10;
  p.width = 12;
  p.channels = 3;
  p.policy = AutoAugmentPolicy::kAugMix;
  p.severity = 10;
  p.seed = 4;
  const int64_t image = p.height * p.width * p.channels;
  Image in(static_cast<size_t>(p.batch * image));
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
  std::vector<int64_t> ids(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) ids[static_cast<size_t>(b)] = 5 * b;
  Image out(in.size());
  cpu::auto_augment(in.data(), ids.data(), out.data(), p);
  for (int64_t b = 0; b < p.batch; ++b) {
    const Image img(in.begin() + b * image, in.begin() + (b + 1) * image);
    const AutoAugmentPlan plan = auto_augment_plan(p, ids[static_cast<size_t>(b)]);
    std::vector<float> mix(img.size());
    for (size_t i = 0; i < img.size(); ++i) mix[i] = plan.keep * static_cast<float>(img[i]);
    for (int c = 0; c < 3; ++c) {
      Image chain = img;
      for (int k = plan.chain_begin[c]; k < plan.chain_begin[c + 1]; ++k) {
        Image next(chain.size());
        cpu::apply_augment_op(chain.data(), next.data(), p.height, p.width, p.channels,
                              plan.ops[k]);
        chain = next;
      }
      for (size_t i = 0; i < img.size(); ++i) {
        const float part = plan.weight[c] * static_cast<float>(chain[i]);
        mix[i] = mix[i] + part;
      }
    }
    for (size_t i = 0; i < img.size(); ++i)
      ASSERT_EQ(out[static_cast<size_t>(b * image) + i], static_cast<uint8_t>(mix[i]))
          << "sample " << b << " value " << i;
  }
}

TEST(AutoAugmentPlans, DependOnSeedEpochAndSampleOnly) {
  AutoAugmentParams p;
  p.height = p.width = 32;
  p.channels = 3;
  p.policy = AutoAugmentPolicy::kRandAugment;
  p.seed = 9;
  auto same = [](const AutoAugmentPlan& a, const AutoAugmentPlan& b) {
    if (a.count != b.count) return false;
    for (int k = 0; k < a.count; ++k) {
      if (a.ops[k].kind != b.ops[k].kind) return false;
      for (int j = 0; j < 6; ++j)
        if (a.ops[k].coef[j] != b.ops[k].coef[j]) return false;
    }
    return true;
  };
  int moved_by_epoch = 0, moved_by_sample = 0;
  for (int64_t i = 0; i < 200; ++i) {
    EXPECT_TRUE(same(auto_augment_plan(p, i), auto_augment_plan(p, i)));
    AutoAugmentParams q = p;
    q.epoch = 1;
    moved_by_epoch += !same(auto_augment_plan(p, i), auto_augment_plan(q, i));
    moved_by_sample += !same(auto_augment_plan(p, i), auto_augment_plan(p, i + 1));
  }
  EXPECT_GT(moved_by_epoch, 150);
  EXPECT_GT(moved_by_sample, 150);
}

// The batch function: each sample's plan applied in turn, the same as one operation at a time.
TEST(AutoAugmentPlans, BatchAppliesEachSamplesPlan) {
  AutoAugmentParams p;
  p.batch = 16;
  p.height = 12;
  p.width = 10;
  p.channels = 3;
  p.policy = AutoAugmentPolicy::kRandAugment;
  p.num_ops = 4;
  p.magnitude = 20;
  p.seed = 3;
  const int64_t image = p.height * p.width * p.channels;
  Image in(static_cast<size_t>(p.batch * image));
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>((i * 7919 + 13) % 256);
  std::vector<int64_t> ids(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) ids[static_cast<size_t>(b)] = 1000 + 3 * b;
  Image out(in.size());
  cpu::auto_augment(in.data(), ids.data(), out.data(), p);
  int changed = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    Image img(in.begin() + b * image, in.begin() + (b + 1) * image);
    const AutoAugmentPlan plan = auto_augment_plan(p, ids[static_cast<size_t>(b)]);
    ASSERT_EQ(plan.count, 4);
    for (int k = 0; k < plan.count; ++k) {
      Image next(img.size());
      cpu::apply_augment_op(img.data(), next.data(), p.height, p.width, p.channels, plan.ops[k]);
      img = next;
    }
    EXPECT_TRUE(std::equal(img.begin(), img.end(), out.begin() + b * image)) << b;
    changed += !std::equal(img.begin(), img.end(), in.begin() + b * image);
  }
  EXPECT_GT(changed, 12);
  // torchvision's operations take grayscale or RGB images only.
  p.channels = 2;
  const tensor::Tensor two =
      tensor::Tensor::from_vector(Image(static_cast<size_t>(p.batch * p.height * p.width * 2), 9),
                                  {p.batch, p.height, p.width, 2});
  EXPECT_THROW(tensor::auto_augment(two, tensor::Tensor::from_vector(ids, {p.batch}), p),
               std::invalid_argument);
}

TEST(AutoAugmentPlans, CudaMatchesCpu) {
  if (!tensor::cuda_available())
    GTEST_SKIP() << "no CUDA device: " << tensor::cuda_unavailable_reason();
  for (AutoAugmentPolicy pol :
       {AutoAugmentPolicy::kTrivialAugmentWide, AutoAugmentPolicy::kRandAugment,
        AutoAugmentPolicy::kImageNet, AutoAugmentPolicy::kCifar10, AutoAugmentPolicy::kSvhn,
        AutoAugmentPolicy::kAugMix}) {
    for (int64_t C : {1, 3}) {
      AutoAugmentParams p;
      p.batch = 96;
      p.height = 32;
      p.width = 28;
      p.channels = C;
      p.policy = pol;
      p.num_ops = 3;
      p.seed = 11;
      p.epoch = 4;
      std::mt19937 g(static_cast<uint32_t>(C * 10 + static_cast<int>(pol)));
      std::vector<uint8_t> v(static_cast<size_t>(p.batch * p.height * p.width * C));
      for (auto& x : v) x = static_cast<uint8_t>(g() % 256);
      const tensor::Tensor px = tensor::Tensor::from_vector(v, {p.batch, p.height, p.width, C});
      std::vector<int64_t> idv(static_cast<size_t>(p.batch));
      for (int64_t b = 0; b < p.batch; ++b) idv[static_cast<size_t>(b)] = 7 * b + 1;
      const tensor::Tensor ids = tensor::Tensor::from_vector(idv, {p.batch});
      const tensor::Device gpu = tensor::Device::cuda(0);
      const auto cpu_out = tensor::auto_augment(px, ids, p).to_vector<uint8_t>();
      const auto gpu_out = tensor::auto_augment(px.to(gpu), ids.to(gpu), p).to_vector<uint8_t>();
      ASSERT_EQ(cpu_out, gpu_out) << "policy " << static_cast<int>(pol) << ", " << C << " channels";
    }
  }
}

}  // namespace
}  // namespace mlai::kernels
