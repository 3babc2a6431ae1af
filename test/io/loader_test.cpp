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

// A checkpoint records the samples of the epoch's order done, all ranks together. Whatever
// ranks and batch size the resumed run has, the rest of the epoch is every sample not done
// yet, exactly once (plus the padding that evens the ranks), and with as many ranks and the
// same batch size as before it is the tail of each rank's shard.
TEST(Loader, ResumesAtASampleOnAnotherWorldOrBatchSize) {
  const int64_t n = 1001, seed = 9, epoch = 2;
  const auto order = epoch_indices(n, true, seed, epoch, 0, 1);
  // The first 9 batches of 16 on 2 ranks: the first 288 of the order, whichever rank.
  const int64_t done = 9 * 16 * 2;
  std::set<int64_t> before;
  for (int r = 0; r < 2; ++r) {
    const auto shard = epoch_indices(n, true, seed, epoch, r, 2);
    before.insert(shard.begin(), shard.begin() + 9 * 16);
  }
  EXPECT_EQ(before, std::set<int64_t>(order.begin(), order.begin() + done));
  for (int world : {1, 2, 3, 4}) {
    std::multiset<int64_t> after;
    size_t len = 0;
    for (int r = 0; r < world; ++r) {
      const auto rest = epoch_indices(n, true, seed, epoch, r, world, true, done);
      if (r == 0) len = rest.size();
      EXPECT_EQ(rest.size(), len) << "rank " << r << " of " << world;
      after.insert(rest.begin(), rest.end());
      if (world == 2) {  // the same world: the tail of the rank's whole shard
        const auto shard = epoch_indices(n, true, seed, epoch, r, 2);
        EXPECT_TRUE(std::equal(rest.begin(), rest.end(), shard.begin() + 9 * 16, shard.end()));
      }
    }
    const int64_t rest = n - done, padding = (rest + world - 1) / world * world - rest;
    EXPECT_EQ(static_cast<int64_t>(after.size()), rest + padding) << world << " ranks";
    // The padding repeats the order's first samples (done already, as padding < done).
    const std::set<int64_t> pad(order.begin(), order.begin() + padding);
    for (int64_t i : order)
      EXPECT_EQ(after.count(i), (before.count(i) ? 0u : 1u) + pad.count(i))
          << "sample " << i << ", " << world << " ranks";
  }
}

TEST(Loader, StartsAtASampleKeepingTheEpochsBatchNumbers) {
  const Dataset d = toy(300);
  LoaderOptions o;
  o.batch_size = 16;
  o.workers = 2;
  o.world = 3;
  o.rank = 1;
  Loader l(d, o);
  EXPECT_EQ(l.num_batches(), 7);  // 100 samples a rank
  // At a multiple of world x batch, the batch that many batches in.
  EXPECT_EQ(l.first_batch_at(2 * 48), 2);
  // 100 done: 200 left, 67 a rank, 5 batches: numbered 2..6, the last still 6.
  EXPECT_EQ(l.start_epoch_at(1, 100), 2);
  std::vector<std::vector<float>> got;
  std::vector<int64_t> numbers;
  while (auto b = l.next()) {
    got.push_back(b->images.to_vector<float>());
    numbers.push_back(b->index);
  }
  EXPECT_EQ(numbers, (std::vector<int64_t>{2, 3, 4, 5, 6}));
  EXPECT_EQ(l.samples_before(2), 100);
  EXPECT_EQ(l.samples_before(4), 100 + 2 * 48);
  // The batches hold this rank's samples of the order after the first 100, in order.
  const auto rest = epoch_indices(300, true, 0, 1, 1, 3, true, 100);
  ASSERT_EQ(rest.size(), 67u);
  const Dataset picked = subset(d, rest);
  LoaderOptions one;
  one.batch_size = 16;
  one.shuffle = false;
  one.seed = o.seed;
  Loader ref(picked, one);
  ref.start_epoch(1);
  // The same pixels, normalized alike (no augmentation here).
  for (size_t k = 0; k < got.size(); ++k) {
    auto b = ref.next();
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->images.to_vector<float>(), got[k]) << "batch " << numbers[k];
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
