// Test helper: pickles as Python 2's cPickle.dump(obj, f, 2) writes them, the form the CIFAR
// python-version batches were made in (str keys and raw data as SHORT_BINSTRING/BINSTRING,
// NumPy arrays through numpy.core.multiarray._reconstruct, memo puts after every container and
// global). Only what a CIFAR batch or metadata file holds: a dict of byte strings, lists of
// ints or strings, and one uint8 2-D array.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mlai::testing {

class Py2Pickle {
 public:
  Py2Pickle() { out_ = "\x80\x02"; }
  // A dict whose values are written by the callables, in order.
  Py2Pickle& begin_dict() {
    out_ += '}';
    put();
    out_ += '(';
    return *this;
  }
  Py2Pickle& key(const std::string& k) {
    str(k);
    return *this;
  }
  Py2Pickle& str(const std::string& s) {
    if (s.size() < 256) {
      out_ += 'U';
      out_ += static_cast<char>(s.size());
    } else {
      out_ += 'T';
      le(static_cast<uint32_t>(s.size()), 4);
    }
    out_ += s;
    put();
    return *this;
  }
  Py2Pickle& int_list(const std::vector<int64_t>& v) {
    out_ += ']';
    put();
    out_ += '(';
    for (int64_t x : v) integer(x);
    out_ += 'e';
    return *this;
  }
  Py2Pickle& str_list(const std::vector<std::string>& v) {
    out_ += ']';
    put();
    out_ += '(';
    for (const auto& s : v) str(s);
    out_ += 'e';
    return *this;
  }
  Py2Pickle& integer(int64_t x) {
    if (x >= 0 && x < 256) {
      out_ += 'K';
      le(static_cast<uint32_t>(x), 1);
    } else if (x >= 0 && x < 65536) {
      out_ += 'M';
      le(static_cast<uint32_t>(x), 2);
    } else {
      out_ += 'J';
      le(static_cast<uint32_t>(static_cast<int32_t>(x)), 4);
    }
    return *this;
  }
  // numpy.ndarray of uint8, rows x cols, C order.
  Py2Pickle& uint8_array(int64_t rows, int64_t cols, const std::string& data) {
    out_ += "cnumpy.core.multiarray\n_reconstruct\n";
    put();
    out_ += "cnumpy\nndarray\n";
    put();
    integer(0);
    out_ += '\x85';  // (0,)
    str("b");
    out_ += '\x87';  // (ndarray, (0,), 'b')
    out_ += 'R';
    put();
    out_ += '(';  // the state: (1, shape, dtype, False, data)
    integer(1);
    integer(rows);
    integer(cols);
    out_ += '\x86';
    out_ += "cnumpy\ndtype\n";
    put();
    str("u1");
    integer(0);
    integer(1);
    out_ += '\x87';
    out_ += 'R';
    put();
    out_ += '(';  // dtype state (3, '|', None, None, None, -1, -1, 0)
    integer(3);
    str("|");
    out_ += "NNN";
    integer(-1);
    integer(-1);
    integer(0);
    out_ += 't';
    out_ += 'b';
    out_ += '\x89';  // False: not Fortran order
    str(data);
    out_ += 't';
    out_ += 'b';
    return *this;
  }
  std::string end_dict() {
    out_ += "u.";
    return out_;
  }

 private:
  void put() {  // BINPUT n, as cPickle memoizes
    if (memo_ < 256) {
      out_ += 'q';
      le(memo_, 1);
    } else {
      out_ += 'r';
      le(memo_, 4);
    }
    ++memo_;
  }
  void le(uint32_t v, int n) {
    for (int k = 0; k < n; ++k) out_ += static_cast<char>((v >> (8 * k)) & 0xFF);
  }
  std::string out_;
  uint32_t memo_ = 1;
};

}  // namespace mlai::testing
