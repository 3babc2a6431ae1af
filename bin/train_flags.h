// mlai_train's flags: every option of nn::Config registered with CLI11 (its --help text), and
// --hidden's parser. Split from mlai_train.cpp, which parses, launches ranks and trains.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "nn/config.h"

namespace mlai::train_flags {

// Registers every flag on `app`, writing into `c`; --hidden's raw values go to `hidden`
// (parse them with parse_widths after parsing).
void add_flags(CLI::App& app, nn::Config& c, std::vector<std::string>& hidden);

// --hidden 512,256 (or hidden = [512, 256] in a config file): positive widths.
std::vector<int64_t> parse_widths(const std::vector<std::string>& parts);

}  // namespace mlai::train_flags
