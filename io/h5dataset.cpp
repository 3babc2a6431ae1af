// The packed HDF5 image format: writing a Dataset in chunked blocks with progress, and reading
// it back (whole, or a sample at a time) after checking every dataset, attribute and label.
#include "io/h5dataset.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/h5file.h"

namespace mlai::io {
namespace {

using nlohmann::json;

// The shortest decimal that reads back as the same float: 0.286, not 0.28600001335144043.
json short_floats(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof(buf), x);
    a.push_back(std::stod(std::string(buf, r.ptr)));
  }
  return a;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out;
  for (int64_t d : s) out += (out.empty() ? "" : " x ") + std::to_string(d);
  return out.empty() ? "a scalar" : "shape " + out;
}

// A JSON array attribute, or a one-line error saying what it should have been.
json json_array_attr(const H5Reader& r, const std::string& key, size_t n, const char* what) {
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read " + r.path() + ": attribute '" + key + "' " + why);
  };
  if (!r.has_attr("/", key)) fail("is missing");
  const std::string s = r.get_attr_string("/", key);
  const json j = json::parse(s, nullptr, false);
  const std::string want = "a JSON array of " + std::to_string(n) + " " + what;
  const std::string shown = s.size() > 60 ? s.substr(0, 57) + "..." : s;
  if (j.is_discarded() || !j.is_array() || j.size() != n) fail("is not " + want + ": " + shown);
  for (const json& e : j) {
    if (std::string(what) == "strings" ? !e.is_string() : !e.is_number()) {
      fail("is not " + want + ": " + shown);
    }
  }
  return j;
}

// Metadata and labels of an open packed file (images left empty), fully validated.
Dataset read_header(const H5Reader& r, std::string* source) {
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read " + r.path() + ": " + why);
  };
  if (!r.has_attr("/", "format")) {
    fail("no 'format' attribute: not an mlai dataset file (mlai_convert writes them)");
  }
  const std::string format = r.get_attr_string("/", "format");
  if (format != kH5DatasetFormat) {
    fail("format is '" + format + "', expected '" + kH5DatasetFormat + "'");
  }
  for (const char* name : {"images", "labels"}) {
    if (!r.has(name)) fail(std::string("no '") + name + "' dataset");
  }
  const H5Reader::Info im = r.info("images"), lb = r.info("labels");
  if (im.dtype != H5Type::kUInt8) {
    fail(std::string("'images' is ") + h5type_name(im.dtype) + ", expected uint8");
  }
  if (im.shape.size() != 4)
    fail("'images' has " + shape_string(im.shape) + ", expected N x H x W x C");
  if (im.shape[0] == 0) fail("'images' holds no images");
  if (std::min({im.shape[1], im.shape[2], im.shape[3]}) == 0) {
    fail("'images' has empty images (" + shape_string(im.shape) + ")");
  }
  if (lb.dtype != H5Type::kInt64) {
    fail(std::string("'labels' is ") + h5type_name(lb.dtype) + ", expected int64");
  }
  if (lb.shape.size() != 1) fail("'labels' has " + shape_string(lb.shape) + ", expected N");
  if (lb.shape[0] != im.shape[0]) {
    fail("'labels' holds " + std::to_string(lb.shape[0]) + " labels but 'images' " +
         std::to_string(im.shape[0]) + " images");
  }
  if (!r.has_attr("/", "num_classes")) fail("attribute 'num_classes' is missing");
  const int64_t num_classes = r.get_attr_int("/", "num_classes");
  if (num_classes < 1 || num_classes > (1 << 24)) {
    fail("attribute 'num_classes' is " + std::to_string(num_classes) + ", expected >= 1");
  }
  Dataset d;
  d.name = r.has_attr("/", "name") ? r.get_attr_string("/", "name") : "hdf5";
  *source = r.has_attr("/", "source") ? r.get_attr_string("/", "source") : "";
  d.count = im.shape[0];
  d.height = im.shape[1];
  d.width = im.shape[2];
  d.channels = im.shape[3];
  d.num_classes = static_cast<int>(num_classes);
  const auto nc = static_cast<size_t>(num_classes), ch = static_cast<size_t>(d.channels);
  for (const json& e : json_array_attr(r, "class_names", nc, "strings")) {
    d.class_names.push_back(e.get<std::string>());
  }
  for (const json& e : json_array_attr(r, "mean", ch, "numbers")) d.mean.push_back(e.get<float>());
  for (const json& e : json_array_attr(r, "std", ch, "numbers")) {
    d.std.push_back(e.get<float>());
    if (!(d.std.back() > 0) || !std::isfinite(d.std.back())) {
      fail("attribute 'std' holds " + e.dump() + ", expected positive numbers");
    }
  }
  d.labels.resize(static_cast<size_t>(d.count));
  r.read("labels", H5Type::kInt64, d.labels.data(), d.count);
  for (size_t i = 0; i < d.labels.size(); ++i) {
    if (d.labels[i] < 0 || d.labels[i] >= num_classes) {
      fail("label " + std::to_string(d.labels[i]) + " at index " + std::to_string(i) +
           " is outside [0, " + std::to_string(num_classes) + ")");
    }
  }
  return d;
}

// What every file must satisfy; `images` is the number of pixel bytes written.
void check_dataset(const Dataset& d, const std::string& path, size_t images) {
  auto require = [&](bool ok, const std::string& why) {
    if (!ok) throw std::runtime_error("cannot write " + path + ": " + why);
  };
  require(d.count > 0, "the dataset holds no images");
  require(d.height > 0 && d.width > 0 && d.channels > 0, "the images are empty");
  require(images == static_cast<size_t>(d.count * d.sample_bytes()),
          "images hold " + std::to_string(images) + " bytes, expected " +
              std::to_string(d.count * d.sample_bytes()));
  require(d.labels.size() == static_cast<size_t>(d.count), "labels and images differ in count");
  require(d.num_classes >= 1 && d.class_names.size() == static_cast<size_t>(d.num_classes),
          "class_names must hold num_classes names");
  require(d.mean.size() == static_cast<size_t>(d.channels) && d.std.size() == d.mean.size(),
          "mean and std must hold one value per channel");
  for (int64_t l : d.labels) {
    require(l >= 0 && l < d.num_classes, "label " + std::to_string(l) + " is out of range");
  }
}

}  // namespace

H5DatasetWriter::H5DatasetWriter(const std::string& path, int64_t count, int64_t height,
                                 int64_t width, int64_t channels, int compression)
    : count_(count), height_(height), width_(width), channels_(channels) {
  if (compression < 0 || compression > 9) {
    throw std::invalid_argument("compression must be in 0..9, got " + std::to_string(compression));
  }
  if (count < 1 || height < 1 || width < 1 || channels < 1)
    throw std::runtime_error("cannot write " + path + ": the dataset holds no images");
  file_ = std::make_unique<H5Writer>(path);
  file_->create("images", H5Type::kUInt8, {count, height, width, channels},
                {{kH5ImagesPerChunk, height, width, channels}, compression});
}

H5DatasetWriter::~H5DatasetWriter() = default;

void H5DatasetWriter::write(int64_t first, int64_t n, const uint8_t* pixels) {
  file_->write_rows("images", H5Type::kUInt8, first, n, pixels);
}

void H5DatasetWriter::finish(const Dataset& header, const std::string& source) {
  Dataset d = header;
  d.count = count_, d.height = height_, d.width = width_, d.channels = channels_;
  check_dataset(d, file_->path(), static_cast<size_t>(count_ * d.sample_bytes()));
  H5Writer& w = *file_;
  w.set_attr("/", "format", kH5DatasetFormat);
  w.set_attr("/", "name", d.name);
  w.set_attr("/", "source", source);
  w.set_attr("/", "num_classes", d.num_classes);
  w.set_attr("/", "class_names", json(d.class_names).dump());
  w.set_attr("/", "mean", short_floats(d.mean).dump());
  w.set_attr("/", "std", short_floats(d.std).dump());
  w.write("labels", H5Type::kInt64, {d.count}, d.labels.data());
  w.commit();
}

void write_h5_dataset(const Dataset& d, const std::string& path, const std::string& source,
                      int compression, const WriteProgress& progress) {
  check_dataset(d, path, d.images.size());
  H5DatasetWriter w(path, d.count, d.height, d.width, d.channels, compression);
  const int64_t block = kH5ImagesPerChunk * 64;  // whole chunks per write
  for (int64_t first = 0; first < d.count; first += block) {
    const int64_t n = std::min(block, d.count - first);
    w.write(first, n, &d.images[static_cast<size_t>(first * d.sample_bytes())]);
    if (progress) progress(first + n, d.count);
  }
  w.finish(d, source);
}

Dataset read_h5_dataset(const std::string& path) {
  H5Reader r(path);
  std::string source;
  Dataset d = read_header(r, &source);
  d.images.resize(static_cast<size_t>(d.count * d.sample_bytes()));
  r.read("images", H5Type::kUInt8, d.images.data(), d.count * d.sample_bytes());
  return d;
}

H5ImageReader::H5ImageReader(const std::string& path) : file_(std::make_unique<H5Reader>(path)) {
  info_ = read_header(*file_, &source_);
}

H5ImageReader::~H5ImageReader() = default;

int64_t H5ImageReader::label(int64_t i) const {
  if (i < 0 || i >= info_.count) {
    throw std::out_of_range("sample " + std::to_string(i) + " is outside the " +
                            std::to_string(info_.count) + " samples of " + file_->path());
  }
  return info_.labels[static_cast<size_t>(i)];
}

void H5ImageReader::read(int64_t i, uint8_t* out) const { read(i, 1, out); }

void H5ImageReader::read(int64_t first, int64_t count, uint8_t* out) const {
  file_->read_rows("images", H5Type::kUInt8, first, count, out);
}

}  // namespace mlai::io
