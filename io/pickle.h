// A reader for the Python pickles that hold data sets, such as the CIFAR-10/100 "python
// version" batches torchvision downloads (cifar-10-batches-py/data_batch_1, ...): dicts, lists,
// tuples, numbers, strings and bytes, and NumPy arrays of plain dtypes. Written by Python 2's
// cPickle (protocol 2: raw bytes as str) or by Python 3 (protocols 2 to 5). It builds values
// only: the only globals it accepts are NumPy's array and dtype reconstructors and
// _codecs.encode (how protocol 2 writes bytes from Python 3), so a pickle cannot run code here.
// Anything else is an error naming the file and the opcode or global.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mlai::io {

struct PyValue;
using PyRef = std::shared_ptr<PyValue>;

struct PyValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kGlobal, kDtype, kArray };
  Kind kind = Kind::kNone;
  int64_t i = 0;   // kBool, kInt
  double f = 0;    // kFloat
  std::string s;   // kString (text as UTF-8, or bytes), kGlobal "module.name", kDtype "u1", kArray's raw data
  std::vector<PyRef> items;                   // kList, kTuple
  std::vector<std::pair<PyRef, PyRef>> dict;  // kDict, in insertion order
  std::vector<int64_t> shape;                 // kArray (C order)
  std::string dtype;                          // kArray: NumPy's type string ("u1", "<i8", ...)

  // The dict's value under a string key (text or bytes), or null.
  const PyValue* get(const std::string& key) const;
  // The elements of a list, tuple or 1-D array as integers (throws naming `what` otherwise).
  std::vector<int64_t> ints(const std::string& what) const;
  // The elements of a list or tuple of strings.
  std::vector<std::string> strings(const std::string& what) const;
};

// Unpickles `bytes`; `name` (the file) is for messages. Throws std::runtime_error.
PyRef unpickle(const std::string& bytes, const std::string& name);
// Reads and unpickles a file.
PyRef unpickle_file(const std::string& path);

}  // namespace mlai::io
