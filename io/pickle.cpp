// The pickle reader (see pickle.h): a stack machine over the opcodes data pickles use.
#include "io/pickle.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace mlai::io {
namespace {

using Kind = PyValue::Kind;

PyRef make(Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

PyRef make_int(int64_t i, Kind k = Kind::kInt) {
  PyRef v = make(k);
  v->i = i;
  return v;
}

PyRef make_string(std::string s) {
  PyRef v = make(Kind::kString);
  v->s = std::move(s);
  return v;
}

// Text (UTF-8) to the bytes latin-1 encodes it to: how Python 3's protocol 2 stores bytes
// (_codecs.encode(text, "latin1")). Code points above 255 cannot be latin-1.
std::string latin1_bytes(const std::string& utf8) {
  std::string out;
  for (size_t i = 0; i < utf8.size();) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < utf8.size()) {
      const int cp = ((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[i + 1]) & 0x3F);
      if (cp > 0xFF) throw std::runtime_error("a character beyond latin-1");
      out.push_back(static_cast<char>(cp));
      i += 2;
    } else {
      throw std::runtime_error("a character beyond latin-1");
    }
  }
  return out;
}

class Unpickler {
 public:
  Unpickler(const std::string& bytes, const std::string& name) : b_(bytes), name_(name) {}

  PyRef run() {
    while (true) {
      const auto op = static_cast<unsigned char>(take(1)[0]);
      switch (op) {
        case 0x80: take(1); break;                          // PROTO
        case 0x95: take(8); break;                          // FRAME (its length)
        case '.': return pop();                             // STOP
        case '(': marks_.push_back(stack_.size()); break;   // MARK
        case '}': push(make(Kind::kDict)); break;           // EMPTY_DICT
        case ']': push(make(Kind::kList)); break;           // EMPTY_LIST
        case ')': push(make(Kind::kTuple)); break;          // EMPTY_TUPLE
        case 'N': push(make(Kind::kNone)); break;           // NONE
        case 0x88: push(make_int(1, Kind::kBool)); break;   // NEWTRUE
        case 0x89: push(make_int(0, Kind::kBool)); break;   // NEWFALSE
        case 'K': push(make_int(uint_le(1))); break;        // BININT1
        case 'M': push(make_int(uint_le(2))); break;        // BININT2
        case 'J': push(make_int(static_cast<int32_t>(uint_le(4)))); break;  // BININT
        case 0x8a: push(make_int(long1())); break;          // LONG1
        case 'G': push(binfloat()); break;                  // BINFLOAT
        case 'U': case 'C': push(make_string(take(uint_le(1)))); break;   // SHORT_BIN{STRING,BYTES}
        case 'T': case 'B': case 'X': push(make_string(take(uint_le(4)))); break;  // BIN{STRING,BYTES,UNICODE}
        case 0x8c: push(make_string(take(uint_le(1)))); break;             // SHORT_BINUNICODE
        case 0x8d: case 0x8e: case 0x96: push(make_string(take(uint_le(8)))); break;  // BIN{UNICODE,BYTES}8, BYTEARRAY8
        case 'q': memo_[uint_le(1)] = top(); break;         // BINPUT
        case 'r': memo_[uint_le(4)] = top(); break;         // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;      // MEMOIZE
        case 'h': push(memo(uint_le(1))); break;            // BINGET
        case 'j': push(memo(uint_le(4))); break;            // LONG_BINGET
        case 0x85: tuple_of(1); break;                      // TUPLE1
        case 0x86: tuple_of(2); break;                      // TUPLE2
        case 0x87: tuple_of(3); break;                      // TUPLE3
        case 't': tuple_of(stack_.size() - pop_mark()); break;  // TUPLE
        case 'a': {                                         // APPEND
          PyRef v = pop();
          list_at_top().items.push_back(v);
          break;
        }
        case 'e': {                                         // APPENDS
          const size_t m = pop_mark();
          std::vector<PyRef> vs(stack_.begin() + static_cast<long>(m), stack_.end());
          stack_.resize(m);
          auto& items = list_at_top().items;
          items.insert(items.end(), vs.begin(), vs.end());
          break;
        }
        case 's': {                                         // SETITEM
          PyRef v = pop(), k = pop();
          dict_at_top().dict.emplace_back(k, v);
          break;
        }
        case 'u': {                                         // SETITEMS
          const size_t m = pop_mark();
          std::vector<PyRef> kv(stack_.begin() + static_cast<long>(m), stack_.end());
          stack_.resize(m);
          if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of items");
          for (size_t i = 0; i < kv.size(); i += 2) dict_at_top().dict.emplace_back(kv[i], kv[i + 1]);
          break;
        }
        case 'c': {                                         // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push(global(module, name));
          break;
        }
        case 0x93: {                                        // STACK_GLOBAL
          PyRef name = pop(), module = pop();
          push(global(module->s, name->s));
          break;
        }
        case 'R': {                                         // REDUCE
          PyRef args = pop(), fn = pop();
          push(reduce(*fn, *args));
          break;
        }
        case 'b': {                                         // BUILD
          PyRef state = pop();
          build(*top(), *state);
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + hex + " (not a data pickle?)");
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(name_ + ": " + what + " at byte " + std::to_string(pos_));
  }
  std::string take(uint64_t n) {
    if (n > b_.size() - pos_) fail("truncated pickle");
    std::string out = b_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  uint64_t uint_le(int n) {
    const std::string s = take(static_cast<uint64_t>(n));
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(s[k]);
    return v;
  }
  int64_t long1() {
    const std::string s = take(uint_le(1));
    if (s.size() > 8) fail("an integer wider than 64 bits");
    uint64_t v = 0;
    for (int k = static_cast<int>(s.size()) - 1; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(s[k]);
    if (!s.empty() && s.size() < 8 && (static_cast<unsigned char>(s.back()) & 0x80))
      v |= ~uint64_t{0} << (8 * s.size());  // sign-extend
    return static_cast<int64_t>(v);
  }
  PyRef binfloat() {
    const std::string s = take(8);
    uint64_t bits = 0;
    for (char c : s) bits = (bits << 8) | static_cast<unsigned char>(c);  // big-endian
    PyRef v = make(Kind::kFloat);
    std::memcpy(&v->f, &bits, sizeof(bits));
    return v;
  }
  std::string line() {
    const size_t end = b_.find('\n', pos_);
    if (end == std::string::npos) fail("truncated GLOBAL");
    std::string s = b_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  void push(PyRef v) { stack_.push_back(std::move(v)); }
  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
    PyRef v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyRef top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  size_t pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  PyRef memo(uint64_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key " + std::to_string(k) + " not set");
    return it->second;
  }
  void tuple_of(size_t n) {
    if (n > stack_.size()) fail("stack underflow");
    PyRef t = make(Kind::kTuple);
    t->items.assign(stack_.end() - static_cast<long>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    push(t);
  }
  PyValue& list_at_top() {
    PyRef t = top();
    if (t->kind != Kind::kList) fail("APPEND to something not a list");
    return *t;
  }
  PyValue& dict_at_top() {
    PyRef t = top();
    if (t->kind != Kind::kDict) fail("SETITEM on something not a dict");
    return *t;
  }
  PyRef global(const std::string& module, const std::string& name) {
    const std::string full = module + "." + name;
    static const char* allowed[] = {
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
        "numpy.core.numeric._frombuffer",     "numpy._core.numeric._frombuffer",
        "numpy.ndarray",                      "numpy.dtype",
        "_codecs.encode"};
    for (const char* a : allowed)
      if (full == a) {
        PyRef g = make(Kind::kGlobal);
        g->s = full;
        return g;
      }
    fail("the pickle needs " + full + ", which a data file should not (only NumPy arrays are read)");
  }
  PyRef reduce(const PyValue& fn, const PyValue& args) {
    if (fn.kind != Kind::kGlobal || args.kind != Kind::kTuple) fail("REDUCE of a non-callable");
    const auto& a = args.items;
    if (fn.s == "_codecs.encode") {  // (text, "latin1"): bytes pickled by Python 3 at protocol 2
      if (a.size() != 2 || a[0]->kind != Kind::kString) fail("_codecs.encode with other arguments");
      try {
        return make_string(latin1_bytes(a[0]->s));
      } catch (const std::exception& e) {
        fail(std::string("_codecs.encode: ") + e.what());
      }
    }
    if (fn.s == "numpy.dtype") {  // ("u1", False, True)
      if (a.empty() || a[0]->kind != Kind::kString) fail("numpy.dtype with other arguments");
      PyRef d = make(Kind::kDtype);
      d->s = a[0]->s;
      return d;
    }
    if (fn.s.size() > 12 && fn.s.compare(fn.s.size() - 12, 12, "_reconstruct") == 0)
      return make(Kind::kArray);  // (ndarray, (0,), b"b"): filled in by BUILD
    if (fn.s.size() > 11 && fn.s.compare(fn.s.size() - 11, 11, "_frombuffer") == 0) {
      // Protocol 5: (buffer, dtype, shape, order), the buffer in-band.
      if (a.size() != 4 || a[0]->kind != Kind::kString || a[1]->kind != Kind::kDtype ||
          a[2]->kind != Kind::kTuple || a[3]->kind != Kind::kString)
        fail("_frombuffer with other arguments");
      if (a[3]->s != "C") fail("a Fortran-ordered array");
      PyRef arr = make(Kind::kArray);
      PyValue state;
      state.kind = Kind::kTuple;
      state.items = {make_int(1), a[2], a[1], make_int(0, Kind::kBool), a[0]};
      build(*arr, state);
      return arr;
    }
    fail("REDUCE of " + fn.s);
  }
  void build(PyValue& obj, const PyValue& state) {
    if (obj.kind == Kind::kDtype) {  // (3, "|" or "<", ...): a plain dtype's byte order
      if (state.kind == Kind::kTuple && state.items.size() > 1 &&
          state.items[1]->kind == Kind::kString && state.items[1]->s == ">")
        fail("a big-endian array");
      return;
    }
    if (obj.kind != Kind::kArray || state.kind != Kind::kTuple || state.items.size() != 5)
      fail("BUILD of something other than a NumPy array");
    // (version, shape, dtype, is_fortran, raw data)
    const auto& st = state.items;
    if (st[1]->kind != Kind::kTuple || st[2]->kind != Kind::kDtype) fail("a malformed array state");
    if (st[4]->kind != Kind::kString) fail("an array of Python objects (not plain numbers)");
    if (st[3]->i != 0) fail("a Fortran-ordered array");
    obj.shape.clear();
    int64_t n = 1;
    for (const auto& d : st[1]->items) {
      obj.shape.push_back(d->i);
      n *= d->i;
    }
    obj.dtype = st[2]->s;
    obj.s = st[4]->s;
    const int64_t width = obj.dtype.empty() ? 0 : obj.dtype.back() - '0';
    if (width < 1 || width > 8 || static_cast<int64_t>(obj.s.size()) != n * width)
      fail("array data of " + std::to_string(obj.s.size()) + " bytes for shape and dtype " +
           obj.dtype);
  }

  const std::string& b_;
  std::string name_;
  size_t pos_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, PyRef> memo_;
};

}  // namespace

const PyValue* PyValue::get(const std::string& key) const {
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::kString && k->s == key) return v.get();
  return nullptr;
}

std::vector<int64_t> PyValue::ints(const std::string& what) const {
  std::vector<int64_t> out;
  if (kind == Kind::kList || kind == Kind::kTuple) {
    for (const auto& v : items) {
      if (v->kind != Kind::kInt) throw std::runtime_error(what + ": not a list of integers");
      out.push_back(v->i);
    }
  } else if (kind == Kind::kArray && shape.size() == 1) {
    const int width = dtype.back() - '0';
    const bool is_signed = dtype.find('i') != std::string::npos;
    for (int64_t e = 0; e < shape[0]; ++e) {
      uint64_t u = 0;
      std::memcpy(&u, s.data() + e * width, static_cast<size_t>(width));  // little-endian host
      if (is_signed && width < 8 && (u >> (8 * width - 1)) & 1) u |= ~uint64_t{0} << (8 * width);
      out.push_back(static_cast<int64_t>(u));
    }
  } else {
    throw std::runtime_error(what + ": not a list of integers");
  }
  return out;
}

std::vector<std::string> PyValue::strings(const std::string& what) const {
  std::vector<std::string> out;
  if (kind != Kind::kList && kind != Kind::kTuple)
    throw std::runtime_error(what + ": not a list of strings");
  for (const auto& v : items) {
    if (v->kind != Kind::kString) throw std::runtime_error(what + ": not a list of strings");
    out.push_back(v->s);
  }
  return out;
}

PyRef unpickle(const std::string& bytes, const std::string& name) {
  return Unpickler(bytes, name).run();
}

PyRef unpickle_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return unpickle(ss.str(), path);
}

}  // namespace mlai::io
