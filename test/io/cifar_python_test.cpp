// The CIFAR python versions torchvision downloads (cifar-10-batches-py/, cifar-100-python/):
// batches pickled as Python 2 wrote them (test/io/py2_pickle.h), read back with the planes
// interleaved into NHWC and the class names from the metadata file; and the pickle reader on
// its own: Python 3's protocols 2, 4 and 5 written by NumPy itself (where python3 has NumPy),
// a global that would run code, and a truncated file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dataset_test_util.h"
#include "io/cifar.h"
#include "io/pickle.h"
#include "py2_pickle.h"

namespace mlai::io {
namespace {

namespace fs = std::filesystem;
using mlai::testing::error_of;
using mlai::testing::Py2Pickle;

uint8_t pixel(int64_t r, int64_t p, int64_t c) {
  return static_cast<uint8_t>((r * 7 + p * 3 + c * 101) % 256);
}

// Records [first, first + n) as the batches hold them: rows of R, G, B planes.
std::string planar_rows(int64_t first, int64_t n) {
  std::string data;
  for (int64_t r = first; r < first + n; ++r)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t p = 0; p < 1024; ++p) data += static_cast<char>(pixel(r, p, c));
  return data;
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A CIFAR-10 batch as the python version holds it (its keys in the order of the real files).
std::string cifar10_batch(int64_t first, const std::vector<int64_t>& labels) {
  std::vector<std::string> files;
  for (size_t k = 0; k < labels.size(); ++k) files.push_back("img" + std::to_string(k) + ".png");
  return Py2Pickle()
      .begin_dict()
      .key("data")
      .uint8_array(static_cast<int64_t>(labels.size()), 3072,
                   planar_rows(first, static_cast<int64_t>(labels.size())))
      .key("labels")
      .int_list(labels)
      .key("batch_label")
      .str("training batch")
      .key("filenames")
      .str_list(files)
      .end_dict();
}

class CifarPython : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mlai_cifar_py_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(CifarPython, ReadsTorchvisionsCifar10Folder) {
  const fs::path sub = dir_ / "cifar-10-batches-py";  // what CIFAR10(root, download=True) leaves
  fs::create_directories(sub);
  const int counts[5] = {1, 2, 1, 1, 3};
  int64_t r = 0;
  for (int b = 0; b < 5; ++b) {
    std::vector<int64_t> labels;
    for (int k = 0; k < counts[b]; ++k) labels.push_back(r + k);
    write(sub / ("data_batch_" + std::to_string(b + 1)), cifar10_batch(r, labels));
    r += counts[b];
  }
  write(sub / "test_batch", cifar10_batch(100, {9, 3}));
  const std::vector<std::string> names = {"plane", "car",  "bird",  "cat",  "deer",
                                          "dog",   "frog", "horse", "ship", "truck"};
  write(sub / "batches.meta", Py2Pickle()
                                  .begin_dict()
                                  .key("num_cases_per_batch")
                                  .integer(10000)
                                  .key("label_names")
                                  .str_list(names)
                                  .key("num_vis")
                                  .integer(3072)
                                  .end_dict());
  const Dataset d = load_cifar("cifar10", dir_.string(), "train");
  EXPECT_EQ(d.count, 8);
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  ASSERT_EQ(d.images.size(), 8u * 3072);
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t p = 0; p < 1024; p += 31)
      for (int64_t c = 0; c < 3; ++c)
        ASSERT_EQ(d.images[static_cast<size_t>((i * 1024 + p) * 3 + c)], pixel(i, p, c));
  EXPECT_EQ(d.class_names, names);  // from batches.meta
  const Dataset t = load_cifar("cifar10", dir_.string(), "test");
  EXPECT_EQ(t.labels, (std::vector<int64_t>{9, 3}));
  EXPECT_EQ(t.images[(1 * 1024 + 5) * 3 + 2], pixel(101, 5, 2));

  // A label out of range, a batch that is not a pickle and a missing batch are named.
  write(sub / "data_batch_4", cifar10_batch(4, {10}));
  std::string msg = error_of([&] { load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("data_batch_4: record 0 has label 10"), std::string::npos) << msg;
  write(sub / "data_batch_4", "not a pickle");
  msg = error_of([&] { load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("data_batch_4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("python-version batch"), std::string::npos) << msg;
  fs::remove(sub / "data_batch_4");
  msg = error_of([&] { load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("data_batch_4"), std::string::npos) << msg;
  // Neither version there: both are named.
  fs::remove_all(sub);
  msg = error_of([&] { load_cifar("cifar10", dir_.string(), "train"); });
  EXPECT_NE(msg.find("cifar-10-batches-bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cifar-10-batches-py"), std::string::npos) << msg;
}

TEST_F(CifarPython, ReadsCifar100FineLabelsAndNames) {
  const fs::path sub = dir_ / "cifar-100-python";
  fs::create_directories(sub);
  auto batch = [](int64_t first, const std::vector<int64_t>& fine) {
    return Py2Pickle()
        .begin_dict()
        .key("filenames")
        .str_list(std::vector<std::string>(fine.size(), "x.png"))
        .key("batch_label")
        .str("training batch 1 of 1")
        .key("fine_labels")
        .int_list(fine)
        .key("coarse_labels")
        .int_list(std::vector<int64_t>(fine.size(), 19))
        .key("data")
        .uint8_array(static_cast<int64_t>(fine.size()), 3072,
                     planar_rows(first, static_cast<int64_t>(fine.size())))
        .end_dict();
  };
  write(sub / "train", batch(0, {30, 99, 7}));
  write(sub / "test", batch(50, {5, 61}));
  std::vector<std::string> names;
  for (int c = 0; c < 100; ++c) names.push_back("class" + std::to_string(c));
  write(sub / "meta", Py2Pickle()
                          .begin_dict()
                          .key("fine_label_names")
                          .str_list(names)
                          .key("coarse_label_names")
                          .str_list(std::vector<std::string>(20, "super"))
                          .end_dict());
  const Dataset d = load_cifar("cifar100", dir_.string(), "train");
  EXPECT_EQ(d.labels, (std::vector<int64_t>{30, 99, 7}));
  EXPECT_EQ(d.images[(2 * 1024 + 9) * 3 + 1], pixel(2, 9, 1));
  EXPECT_EQ(d.class_names, names);
  EXPECT_EQ(load_cifar("cifar100", dir_.string(), "test").labels, (std::vector<int64_t>{5, 61}));
}

// Python 3 with NumPy writes the same dict at protocols 2 (bytes through _codecs.encode), 4
// (frames, STACK_GLOBAL, MEMOIZE) and 5 (the array's buffer in-band through _frombuffer).
TEST_F(CifarPython, ReadsWhatPython3AndNumPyPickle) {
  if (std::system("python3 -c 'import numpy' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with NumPy is not installed here";
  const fs::path script = dir_ / "write.py";
  std::ofstream(script) << R"(import pickle, sys
import numpy as np
rows = np.array([[(r * 7 + p * 3 + c * 101) % 256 for c in range(3) for p in range(1024)]
                 for r in range(3)], dtype=np.uint8)  # planar rows, as the batches hold them
d = {'batch_label': 'training batch 1 of 5', 'labels': [6, 9, 1], 'data': rows,
     'filenames': ['a.png', 'b.png', 'c.png'], 'index': np.array([-2, 7], dtype='<i8'),
     'scale': 0.5, 'big': 2**40, 'neg': -3, 'flag': True}
for proto in (2, 4, 5):
    with open(sys.argv[1] + '/p%d' % proto, 'wb') as f:
        pickle.dump(d, f, protocol=proto)
)";
  ASSERT_EQ(std::system(("python3 " + script.string() + " " + dir_.string()).c_str()), 0);
  for (int proto : {2, 4, 5}) {
    const std::string path = (dir_ / ("p" + std::to_string(proto))).string();
    const PyRef v = unpickle_file(path);
    ASSERT_EQ(v->kind, PyValue::Kind::kDict) << proto;
    const PyValue* data = v->get("data");
    ASSERT_NE(data, nullptr) << proto;
    ASSERT_EQ(data->kind, PyValue::Kind::kArray) << proto;
    EXPECT_EQ(data->shape, (std::vector<int64_t>{3, 3072})) << proto;
    ASSERT_TRUE(data->s == planar_rows(0, 3)) << "protocol " << proto << ": other pixels";
    EXPECT_EQ(v->get("labels")->ints("labels"), (std::vector<int64_t>{6, 9, 1}));
    EXPECT_EQ(v->get("index")->ints("index"), (std::vector<int64_t>{-2, 7}));
    EXPECT_EQ(v->get("filenames")->strings("filenames")[2], "c.png");
    EXPECT_EQ(v->get("batch_label")->s, "training batch 1 of 5");
    EXPECT_DOUBLE_EQ(v->get("scale")->f, 0.5);
    EXPECT_EQ(v->get("big")->i, int64_t{1} << 40);
    EXPECT_EQ(v->get("neg")->i, -3);
    EXPECT_EQ(v->get("flag")->i, 1);
  }
}

// The Python-2 form this test writes (py2_pickle.h) is what Python 3 and NumPy read back as
// torchvision does (pickle.load(f, encoding="latin1")): the same labels and pixels.
TEST_F(CifarPython, Python3ReadsThePython2FormTheTestsWrite) {
  if (std::system("python3 -c 'import numpy' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with NumPy is not installed here";
  write(dir_ / "batch", cifar10_batch(5, {3, 8}));
  const fs::path script = dir_ / "read.py";
  std::ofstream(script) << R"(import pickle, sys
import numpy as np
with open(sys.argv[1], 'rb') as f:
    d = pickle.load(f, encoding='latin1')
assert d['labels'] == [3, 8], d['labels']
x = d['data']
assert x.dtype == np.uint8 and x.shape == (2, 3072), (x.dtype, x.shape)
r, c, p = 1, 2, 77  # record 6, channel 2, position 77 of its plane
assert x[r, c * 1024 + p] == ((5 + r) * 7 + p * 3 + c * 101) % 256
assert d['filenames'][1] == 'img1.png'
)";
  EXPECT_EQ(std::system(("python3 " + script.string() + " " + (dir_ / "batch").string()).c_str()),
            0);
}

TEST(Pickle, RefusesCodeAndNamesTruncation) {
  // pickle.dumps(os.system('ls')) as a malicious "data file" would hold it.
  const std::string evil = std::string("\x80\x02") + "cposix\nsystem\nq\x00U\x02lsq\x01\x85q\x02Rq\x03.";
  std::string msg = error_of([&] { unpickle(evil, "evil.pkl"); });
  EXPECT_NE(msg.find("evil.pkl: the pickle needs posix.system"), std::string::npos) << msg;
  const std::string good = cifar10_batch(0, {1, 2});
  EXPECT_EQ(unpickle(good, "ok")->get("labels")->ints("labels"), (std::vector<int64_t>{1, 2}));
  msg = error_of([&] { unpickle(good.substr(0, good.size() / 2), "half.pkl"); });
  EXPECT_NE(msg.find("half.pkl: truncated pickle"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mlai::io
