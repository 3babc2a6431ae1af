// Small file helpers the data set readers share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlai::io {

// The whole file. Throws "cannot read PATH: why" (missing, unreadable, shrank while read).
std::vector<uint8_t> read_file_bytes(const std::string& path);

// The file's non-empty lines, trailing spaces and '\r' removed (class-name files); none when
// the file is missing.
std::vector<std::string> read_name_lines(const std::string& path);

}  // namespace mlai::io
