// Settings files, as LightningCLI's --config / --print_config: a YAML mapping of key: value
// lines, each key a mlai_train flag without its '--' (batch-size or batch_size).
#pragma once

#include <memory>
#include <string>

#include "nn/config.h"

namespace CLI {
class Config;
}

namespace mlai::nn {

// Every setting of `c` as a YAML file that `mlai_train --config FILE` reads back into the same
// Config: what --print-config prints and what each run saves as config.yaml. Settings that are
// off or empty (--resume, --max-time, ...) are written as null, which reads as "not given".
std::string config_yaml(const Config& c);

// The reader CLI11 uses for --config (CLI::App::config_formatter): parses YAML with yaml-cpp
// and hands each key's value(s) to CLI11 as if given on the command line, where a flag given
// on the command line wins. Keys may use '_' for '-'; null values are skipped; a nested
// mapping or a YAML syntax error throws CLI::ConfigError naming the key or the line.
std::shared_ptr<CLI::Config> yaml_config_reader();

}  // namespace mlai::nn
