// See read_file.h.
#include "io/read_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace mlai::io {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("cannot read " + path + ": " + why);
  };
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(ec.message());
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail(std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (std::fread(bytes.data(), 1, bytes.size(), f.get()) != bytes.size())
    fail(std::ferror(f.get()) ? std::strerror(errno) : "the file shrank while reading");
  return bytes;
}

std::vector<std::string> read_name_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace mlai::io
