// A small TFRecord + protobuf reader for TensorBoard event files, for tests: checks lengths and
// both masked CRCs of every record and decodes scalar summaries.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "io/tensorboard.h"

namespace mlai::testing {

using io::masked_crc32c;

inline uint64_t get_le(const std::string& s, size_t pos, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(uint8_t(s[pos + size_t(i)])) << (8 * i);
  return v;
}

// A protobuf field: number, wire type, and its value (varint/fixed as an integer, or bytes).
struct Field {
  int number, wire;
  uint64_t num = 0;
  std::string bytes;
};

inline std::vector<Field> parse_proto(const std::string& s) {
  std::vector<Field> fields;
  size_t p = 0;
  auto varint = [&] {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      uint8_t b = uint8_t(s.at(p++));
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (p < s.size()) {
    uint64_t key = varint();
    Field f;
    f.number = int(key >> 3);
    f.wire = int(key & 7);
    if (f.wire == 0)
      f.num = varint();
    else if (f.wire == 1)
      f.num = get_le(s, p, 8), p += 8;
    else if (f.wire == 5)
      f.num = get_le(s, p, 4), p += 4;
    else if (f.wire == 2) {
      size_t n = varint();
      f.bytes = s.substr(p, n);
      p += n;
    } else
      ADD_FAILURE() << "unexpected wire type " << f.wire;
    fields.push_back(f);
  }
  EXPECT_EQ(p, s.size());
  return fields;
}

// Reads TFRecords, checking lengths and both masked CRCs.
inline std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> records;
  size_t p = 0;
  while (p < s.size()) {
    EXPECT_LE(p + 12, s.size());
    uint64_t len = get_le(s, p, 8);
    EXPECT_EQ(get_le(s, p + 8, 4), masked_crc32c(s.data() + p, 8));
    std::string data = s.substr(p + 12, len);
    EXPECT_EQ(get_le(s, p + 12 + len, 4), masked_crc32c(data.data(), data.size()));
    records.push_back(data);
    p += 12 + len + 4;
  }
  EXPECT_EQ(p, s.size());
  return records;
}

struct Scalar {
  std::string tag;
  int64_t step;
  float value;
  double wall_time;
};

inline Scalar decode_scalar(const std::string& event) {
  Scalar out{};
  for (const Field& f : parse_proto(event)) {
    if (f.number == 1) std::memcpy(&out.wall_time, &f.num, 8);
    if (f.number == 2) out.step = int64_t(f.num);
    if (f.number == 5) {
      auto value = parse_proto(parse_proto(f.bytes).at(0).bytes);
      out.tag = value.at(0).bytes;
      uint32_t bits = uint32_t(value.at(1).num);
      std::memcpy(&out.value, &bits, 4);
    }
  }
  return out;
}

// Each Summary.Value of an event file: its event's step and its tag, and the field number and
// bytes of its payload (4: Image, 5: HistogramProto, 8: tensor); scalars (field 2, fixed32)
// have empty bytes.
struct SummaryValue {
  int64_t step = 0;
  std::string tag;
  int field = 0;
  std::string bytes;
};

inline std::vector<SummaryValue> summary_values(const std::string& path) {
  std::vector<SummaryValue> out;
  for (const std::string& rec : read_records(path)) {
    int64_t step = 0;
    for (const Field& f : parse_proto(rec)) {
      if (f.number == 2) step = int64_t(f.num);
      if (f.number != 5) continue;  // Event.summary
      for (const Field& v : parse_proto(f.bytes)) {
        SummaryValue sv;
        sv.step = step;
        for (const Field& g : parse_proto(v.bytes)) {
          if (g.number == 1) {
            sv.tag = g.bytes;
          } else if (g.number != 9) {  // (9: metadata)
            sv.field = g.number;
            sv.bytes = g.bytes;
          }
        }
        out.push_back(sv);
      }
    }
  }
  return out;
}

}  // namespace mlai::testing
