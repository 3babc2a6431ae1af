// The loader: batches identical whatever the worker count, shards disjoint and covering the
// data with equal step counts, resumable at a batch, errors surfacing, early stop without hangs.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "io/loader.h"

namespace mlai::io {
namespace {

Dataset toy(int64_t n) {
  Dataset d;
  d.name = "toy";
  d.count = n;
  d.height = 2;
  d.width = 3;
  d.channels = 1;
  d.num_classes = 10;
  d.mean = {0.5f};
  d.std = {0.25f};
  for (int64_t i = 0; i < n; ++i) {
    for (int p = 0; p < 6; ++p) d.images.push_back(static_cast<uint8_t>((i * 7 + p) % 256));
    d.labels.push_back(i % 10);
  }
  return d;
}

std::vector<std::vector<float>> run(const Dataset& d, LoaderOptions o, int64_t epoch,
                                    int64_t first = 0) {
  Loader l(d, o);
  l.start_epoch(epoch, first);
  std::vector<std::vector<float>> out;
  while (auto b = l.next()) out.push_back(b->images.to_vector<float>());
  return out;
}

TEST(Loader, SameBatchesWhateverTheWorkerCount) {
  const Dataset d = toy(1000);
  LoaderOptions o;
  o.batch_size = 33;
  o.seed = 5;
  const auto ref = run(d, o, 3);
  EXPECT_EQ(ref.size(), 31u);  // 1000 / 33 rounded up
  for (int w : {1, 2, 5}) {
    o.workers = w;
    EXPECT_EQ(run(d, o, 3), ref) << w << " workers";
  }
  EXPECT_NE(run(d, o, 4), ref);  // another epoch, another order
  // Normalisation: (p / 255 - 0.5) / 0.25 for the first pixel of some sample.
  for (float v : ref[0]) ASSERT_TRUE(v >= -2.0f && v <= 2.0f);
}

TEST(Loader, StartsAtABatchForResume) {
  const Dataset d = toy(300);
  LoaderOptions o;
  o.batch_size = 16;
  o.workers = 3;
  const auto all = run(d, o, 1);
  const auto tail = run(d, o, 1, 7);
  ASSERT_EQ(tail.size(), all.size() - 7);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), all.begin() + 7));
}

TEST(Loader, ShardsAreDisjointCoverAndHaveEqualLengths) {
  for (int world : {2, 3, 4}) {
    const int64_t n = 1001;
    std::multiset<int64_t> seen;
    size_t len = 0;
    for (int r = 0; r < world; ++r) {
      const auto idx = epoch_indices(n, true, 9, 2, r, world);
      if (r == 0) len = idx.size();
      EXPECT_EQ(idx.size(), len);
      seen.insert(idx.begin(), idx.end());
    }
    for (int64_t i = 0; i < n; ++i) EXPECT_GE(seen.count(i), 1u) << i;
    EXPECT_EQ(seen.size(), static_cast<size_t>((n + world - 1) / world * world));  // padding only
    // Without padding, shards are disjoint: n divisible by world.
    std::set<int64_t> uniq;
    for (int r = 0; r < world; ++r)
      for (int64_t i : epoch_indices(1200, true, 9, 2, r, world)) EXPECT_TRUE(uniq.insert(i).second);
  }
}

TEST(Loader, DropLastAndLimits) {
  const Dataset d = toy(100);
  LoaderOptions o;
  o.batch_size = 30;
  EXPECT_EQ(Loader(d, o).num_batches(), 4);
  o.drop_last = true;
  EXPECT_EQ(Loader(d, o).num_batches(), 3);
  o.limit_batches = 2;
  EXPECT_EQ(run(d, o, 0).size(), 2u);
  o.batch_size = 0;
  EXPECT_THROW(Loader(d, o), std::invalid_argument);
}

TEST(Loader, StoppingEarlyDoesNotHang) {
  const Dataset d = toy(5000);
  LoaderOptions o;
  o.batch_size = 10;
  o.workers = 4;
  o.prefetch = 2;
  for (int i = 0; i < 20; ++i) {
    Loader l(d, o);
    l.start_epoch(i);
    l.next();
    l.next();
  }  // destructors join blocked workers
  SUCCEED();
}

// A source that fails on one sample, as a corrupt record in a file would.
struct FailingSource : SampleSource {
  const Dataset& d;
  int64_t bad;
  FailingSource(const Dataset& ds, int64_t b) : d(ds), bad(b) {}
  int64_t read(int64_t i, uint8_t* px) const override {
    if (i == bad) throw std::runtime_error("cannot read data/x.h5: corrupt chunk");
    for (int64_t p = 0; p < d.sample_bytes(); ++p) px[p] = d.images[static_cast<size_t>(i * 6 + p)];
    return d.labels[static_cast<size_t>(i)];
  }
};

TEST(Loader, AWorkerErrorReachesTheTrainerNamingFileAndSample) {
  const Dataset d = toy(400);
  for (int workers : {0, 3}) {
    LoaderOptions o;
    o.batch_size = 10;
    o.workers = workers;
    o.shuffle = false;
    Dataset streamed = d;
    streamed.source = std::make_shared<FailingSource>(d, 123);
    Loader l(streamed, o);
    l.start_epoch(0);
    int64_t got = 0;
    try {
      while (l.next()) ++got;
      FAIL() << "expected the worker's error";
    } catch (const std::runtime_error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("data/x.h5"), std::string::npos) << m;
      EXPECT_NE(m.find("sample 123"), std::string::npos) << m;
    }
    EXPECT_EQ(got, 12);  // batches 0..11 came through; batch 12 holds sample 123
  }
}

TEST(Loader, SourceAndArraysGiveTheSameBatches) {
  const Dataset d = toy(100);
  LoaderOptions o;
  o.batch_size = 7;
  o.workers = 2;
  const auto ref = run(d, o, 2);
  Dataset streamed = d;
  streamed.source = std::make_shared<FailingSource>(d, -1);
  EXPECT_EQ(run(streamed, o, 2), ref);
  // A subset of a streamed set reads the remapped rows.
  const std::vector<int64_t> pick{5, 99, 0, 42};
  EXPECT_EQ(run(subset(streamed, pick), o, 0), run(subset(d, pick), o, 0));
}

TEST(Loader, AugmentationIsDeterministicAcrossWorkerCounts) {
  const Dataset d = toy(200);
  LoaderOptions o;
  o.batch_size = 16;
  o.augment_pad = 1;
  o.augment_flip = true;
  const auto ref = run(d, o, 5);
  o.workers = 3;
  EXPECT_EQ(run(d, o, 5), ref);
  o.augment_pad = 0;
  o.augment_flip = false;
  EXPECT_NE(run(d, o, 5), ref);  // the augmentation did change the pixels
}

TEST(Loader, SubsetAndPermutation) {
  const Dataset d = toy(50);
  const auto p = permutation(50, 3);
  std::set<int64_t> s(p.begin(), p.end());
  EXPECT_EQ(s.size(), 50u);
  EXPECT_EQ(permutation(50, 3), p);
  EXPECT_NE(permutation(50, 4), p);
  const Dataset sub = subset(d, {4, 2});
  EXPECT_EQ(sub.count, 2);
  EXPECT_EQ(sub.labels, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(sub.images[0], d.images[4 * 6]);
}

}  // namespace
}  // namespace mlai::io
