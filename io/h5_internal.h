// Helpers shared by io/h5file.cpp and io/h5reader.cpp (defined in io/h5_internal.cpp): RAII for
// HDF5 ids, dtype mapping, path checks, and HDF5's error stack turned into one line. Internal to
// io/: it includes hdf5.h, so nothing outside io/ should include it.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <optional>
#include <string>
#include <type_traits>

#include "io/h5file.h"

namespace mlai::io::h5 {

static_assert(std::is_same_v<hid_t, int64_t>, "HDF5 >= 1.10 (64-bit hid_t) is required");

// Owns an HDF5 id and closes it with the matching H5?close.
class Id {
 public:
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Turns off HDF5's printing of its error stack to stderr (we throw our own messages); once per
// thread, as a thread-safe HDF5 keeps that switch per thread.
void silence_errors();

// Every HDF5 call in io/ runs under this one process-wide lock. Many HDF5 builds (cluster
// modules built without --enable-threadsafe) must not be entered from two threads at once, and
// a thread-safe build takes one global lock internally anyway, so serialising here costs nothing
// extra. It is recursive because public methods call each other (read() calls info()).
// Declare a Lock first in every public H5Writer/H5Reader method, so it outlives the method's ids.
std::recursive_mutex& mutex();
struct Lock {
  Lock() : guard(mutex()) { silence_errors(); }
  std::lock_guard<std::recursive_mutex> guard;
};

// The most specific message on HDF5's current error stack, in parentheses, or "".
std::string error_detail();

hid_t mem_type(H5Type t);
hid_t file_type(H5Type t);
// The H5Type of a stored datatype, or nullopt with a description in `what` ("float16", ...).
std::optional<H5Type> classify(hid_t type, std::string* what);

// "/a/b" -> "a/b"; throws (naming file) on empty names or empty components like "a//b".
std::string normalize(const std::string& file, const std::string& name);
// True if every component of the path exists (H5Lexists needs its parents to exist).
bool exists(hid_t file, const std::string& path);
// Closes any object id (group, dataset, named datatype).
inline herr_t close_object(hid_t id) { return H5Oclose(id); }

}  // namespace mlai::io::h5
