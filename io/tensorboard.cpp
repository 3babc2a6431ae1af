// TensorBoard event writer: table-driven CRC32C, a hand-rolled protobuf encoder for the handful of
// fields scalar, histogram, image and hparams events need, and TFRecord framing around them.
// Byte order is written explicitly (little-endian) so the files are the same on any host.
#include "io/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>

namespace mlai::io {
namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// Protobuf wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
void put_tag(std::string& out, int field, int wire_type) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire_type));
}

void put_bytes_field(std::string& out, int field, const std::string& bytes) {
  put_tag(out, field, 2);
  put_varint(out, bytes.size());
  out += bytes;
}

void put_double_field(std::string& out, int field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  put_tag(out, field, 1);
  put_le(out, bits, 8);
}

// Event { double wall_time = 1; int64 step = 2; Summary summary = 5 { repeated Value value = 1; } }
// around one encoded Summary.Value. Negative steps: two's complement varints, 10 bytes.
std::string value_event(const std::string& value, int64_t step, double wall_time) {
  std::string summary;
  put_bytes_field(summary, 1, value);
  std::string event;
  put_double_field(event, 1, wall_time);
  put_tag(event, 2, 0);
  put_varint(event, static_cast<uint64_t>(step));
  put_bytes_field(event, 5, summary);
  return event;
}

std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = kCrc32cTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

double unix_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string encode_scalar_event(const std::string& tag, float value, int64_t step,
                                double wall_time) {
  std::string v;  // Summary.Value { string tag = 1; float simple_value = 2; }
  put_bytes_field(v, 1, tag);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_tag(v, 2, 5);
  put_le(v, bits, 4);
  return value_event(v, step, wall_time);
}

namespace {
// TensorFlow's default histogram bucket edges: 0 and +-1e-12 x 1.1^k below 1e20, ascending,
// and the largest double last (so every finite value has a bucket).
const std::vector<double>& default_bucket_limits() {
  static const std::vector<double> limits = [] {
    std::vector<double> pos;
    for (double v = 1e-12; v < 1e20; v *= 1.1) pos.push_back(v);
    std::vector<double> out;
    for (auto it = pos.rbegin(); it != pos.rend(); ++it) out.push_back(-*it);
    out.push_back(0.0);
    out.insert(out.end(), pos.begin(), pos.end());
    out.push_back(std::numeric_limits<double>::max());
    return out;
  }();
  return limits;
}

void put_packed_doubles(std::string& out, int field, const std::vector<double>& v) {
  std::string packed;
  for (double d : v) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    put_le(packed, bits, 8);
  }
  put_bytes_field(out, field, packed);
}
}  // namespace

Histogram make_histogram(const float* values, size_t n) {
  const std::vector<double>& edges = default_bucket_limits();
  std::vector<double> counts(edges.size(), 0.0);
  Histogram h;
  h.min = std::numeric_limits<double>::infinity();
  h.max = -h.min;
  for (size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) continue;
    // The bucket whose upper edge is the first above v.
    const size_t b = static_cast<size_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin());
    counts[std::min(b, edges.size() - 1)] += 1;
    h.min = std::min(h.min, v);
    h.max = std::max(h.max, v);
    h.num += 1;
    h.sum += v;
    h.sum_squares += v * v;
  }
  if (h.num == 0) {
    h.min = h.max = 0;
    return h;
  }
  size_t first = 0, last = counts.size() - 1;
  while (counts[first] == 0) ++first;
  while (counts[last] == 0) --last;
  for (size_t b = first; b <= last; ++b) {
    if (counts[b] == 0 && !h.counts.empty() && h.counts.back() == 0) {
      h.limits.back() = edges[b];  // widen the empty bucket before it
      continue;
    }
    h.limits.push_back(edges[b]);
    h.counts.push_back(counts[b]);
  }
  return h;
}

std::string encode_histogram_event(const std::string& tag, const Histogram& h, int64_t step,
                                   double wall_time) {
  std::string histo;  // HistogramProto { min 1; max 2; num 3; sum 4; sum_squares 5;
                      //   repeated double bucket_limit = 6 [packed]; bucket = 7 [packed] }
  put_double_field(histo, 1, h.min);
  put_double_field(histo, 2, h.max);
  put_double_field(histo, 3, h.num);
  put_double_field(histo, 4, h.sum);
  put_double_field(histo, 5, h.sum_squares);
  put_packed_doubles(histo, 6, h.limits);
  put_packed_doubles(histo, 7, h.counts);
  std::string v;  // Summary.Value { string tag = 1; HistogramProto histo = 5; }
  put_bytes_field(v, 1, tag);
  put_bytes_field(v, 5, histo);
  return value_event(v, step, wall_time);
}

std::string encode_image_event(const std::string& tag, const std::string& png, int64_t height,
                               int64_t width, int channels, int64_t step, double wall_time) {
  std::string image;  // Summary.Image { int32 height = 1; int32 width = 2; int32 colorspace = 3;
                      //   bytes encoded_image_string = 4; } (colorspace 1 gray, 3 RGB)
  put_tag(image, 1, 0);
  put_varint(image, static_cast<uint64_t>(height));
  put_tag(image, 2, 0);
  put_varint(image, static_cast<uint64_t>(width));
  put_tag(image, 3, 0);
  put_varint(image, static_cast<uint64_t>(channels));
  put_bytes_field(image, 4, png);
  std::string v;  // Summary.Value { string tag = 1; Image image = 4; }
  put_bytes_field(v, 1, tag);
  put_bytes_field(v, 4, image);
  return value_event(v, step, wall_time);
}

namespace {
// Event { wall_time = 1; step = 2 (0); summary = 5 { value = 1 { tag = 1; tensor = 8;
// metadata = 9 { plugin_data = 1 { plugin_name = 1; content = 2 } } } } } with the hparams
// plugin's empty float tensor (dtype DT_FLOAT, shape [0]), as TensorBoard's own summaries.
std::string encode_hparams_event(const std::string& tag, const std::string& plugin_data,
                                 double wall_time) {
  std::string data;  // HParamsPluginData { int32 version = 1 (0: omitted); oneof data }
  data += plugin_data;
  std::string pd;  // SummaryMetadata.PluginData
  put_bytes_field(pd, 1, "hparams");
  put_bytes_field(pd, 2, data);
  std::string meta;  // SummaryMetadata
  put_bytes_field(meta, 1, pd);
  std::string shape;  // TensorShapeProto { repeated Dim dim = 2 { int64 size = 1 (0) } }
  put_bytes_field(shape, 2, "");
  std::string tensor;  // TensorProto { DataType dtype = 1 (DT_FLOAT = 1); shape = 2 }
  put_tag(tensor, 1, 0);
  put_varint(tensor, 1);
  put_bytes_field(tensor, 2, shape);
  std::string v;
  put_bytes_field(v, 1, tag);
  put_bytes_field(v, 8, tensor);
  put_bytes_field(v, 9, meta);
  return value_event(v, 0, wall_time);
}
}  // namespace

std::string encode_hparams_start_event(const std::vector<HParam>& hparams, double wall_time) {
  std::string start;  // SessionStartInfo { map<string, Value> hparams = 1; start_time_secs = 5 }
  for (const auto& h : hparams) {
    std::string value;  // google.protobuf.Value { number 2 | string 3 | bool 4 }
    if (const double* d = std::get_if<double>(&h.value)) {
      put_double_field(value, 2, *d);
    } else if (const std::string* str = std::get_if<std::string>(&h.value)) {
      put_bytes_field(value, 3, *str);
    } else {
      put_tag(value, 4, 0);
      put_varint(value, std::get<bool>(h.value) ? 1 : 0);
    }
    std::string entry;  // map entry { key = 1; value = 2 }
    put_bytes_field(entry, 1, h.name);
    put_bytes_field(entry, 2, value);
    put_bytes_field(start, 1, entry);
  }
  put_double_field(start, 5, wall_time);
  std::string data;  // HParamsPluginData.session_start_info = 3
  put_bytes_field(data, 3, start);
  return encode_hparams_event("_hparams_/session_start_info", data, wall_time);
}

std::string encode_hparams_end_event(bool success, double wall_time) {
  std::string end;  // SessionEndInfo { Status status = 1 (SUCCESS 1, FAILURE 2); end_time_secs = 2 }
  put_tag(end, 1, 0);
  put_varint(end, success ? 1 : 2);
  put_double_field(end, 2, wall_time);
  std::string data;  // HParamsPluginData.session_end_info = 4
  put_bytes_field(data, 4, end);
  return encode_hparams_event("_hparams_/session_end_info", data, wall_time);
}

std::string frame_tfrecord(const std::string& data) {
  std::string out, len;
  put_le(len, data.size(), 8);
  out += len;
  put_le(out, masked_crc32c(len.data(), len.size()), 4);
  out += data;
  put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

EventWriter::EventWriter(const std::string& log_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  if (ec) {
    throw std::runtime_error("cannot create TensorBoard log directory " + log_dir + ": " +
                             ec.message());
  }
  const double now = unix_time_now();
  const std::string base =
      (fs::path(log_dir) /
       ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + hostname()))
          .string();
  path_ = base;
  for (int n = 1; !file_; ++n) {
    // "wbx" fails if the file exists, so two writers never share (and truncate) one file.
    file_ = std::fopen(path_.c_str(), "wbx");
    if (!file_ && (errno != EEXIST || n > 1000)) {
      throw std::runtime_error("cannot create TensorBoard event file " + path_ + ": " +
                               std::strerror(errno));
    }
    if (!file_) path_ = base + "." + std::to_string(n);
  }
  std::string first;  // Event { double wall_time = 1; string file_version = 3; }
  put_double_field(first, 1, now);
  put_bytes_field(first, 3, "brain.Event:2");
  write_record(first);
  flush();
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);  // fclose flushes; errors here have nowhere to go
}

void EventWriter::add_scalar(const std::string& tag, float value, int64_t step, double wall_time) {
  write_record(encode_scalar_event(tag, value, step, wall_time));
}

void EventWriter::add_histogram(const std::string& tag, const std::vector<float>& values,
                                int64_t step, double wall_time) {
  write_record(encode_histogram_event(tag, make_histogram(values.data(), values.size()), step,
                                      wall_time));
}

void EventWriter::add_image(const std::string& tag, const std::string& png, int64_t height,
                            int64_t width, int channels, int64_t step, double wall_time) {
  write_record(encode_image_event(tag, png, height, width, channels, step, wall_time));
}

void EventWriter::add_hparams(const std::vector<HParam>& hparams, double wall_time) {
  write_record(encode_hparams_start_event(hparams, wall_time));
}

void EventWriter::end_hparams_session(bool success, double wall_time) {
  write_record(encode_hparams_end_event(success, wall_time));
}

void EventWriter::flush() {
  if (std::fflush(file_) != 0) {
    throw std::runtime_error("cannot write TensorBoard event file " + path_ + ": " +
                             std::strerror(errno));
  }
}

void EventWriter::write_record(const std::string& data) {
  std::string rec = frame_tfrecord(data);
  if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size()) {
    throw std::runtime_error("cannot write TensorBoard event file " + path_ + ": " +
                             std::strerror(errno));
  }
}

}  // namespace mlai::io
