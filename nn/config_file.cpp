// Settings files in YAML: written with yaml-cpp's emitter, read with its parser for CLI11.
#include "nn/config_file.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <istream>
#include <map>
#include <set>
#include <vector>

namespace mlai::nn {

std::string config_yaml(const Config& c) {
  // Keys as the flags spell them, sorted, so two files diff line by line.
  std::map<std::string, nlohmann::json> settings;
  const nlohmann::json fields = to_json(c);  // items() refers to it: it must outlive the loop
  for (const auto& [field, value] : fields.items()) {
    std::string key = field;
    std::replace(key.begin(), key.end(), '_', '-');
    if (field == "overlap" || field == "progress")  // the flags are --no-overlap, --no-progress
      settings["no-" + key] = !value.get<bool>();
    else
      settings[key] = value;
  }
  YAML::Emitter out;
  out.SetNullFormat(YAML::LowerNull);
  out << YAML::Comment(
             "mlai_train settings: mlai_train --config THIS_FILE (flags on the command line\n"
             "override it). Keys are the flags without '--'; null means not given.")
      << YAML::Newline << YAML::BeginMap;
  for (const auto& [key, v] : settings) {
    out << YAML::Key << key << YAML::Value;
    // An empty string or list, or a zero --fast-dev-run, means "not given" (--resume "" or
    // --fast-dev-run 0 on a command line would mean something else).
    if ((v.is_string() && v.get<std::string>().empty()) || (v.is_array() && v.empty()) ||
        (key == "fast-dev-run" && v == 0)) {
      out << YAML::Null;
    } else if (v.is_string()) {
      out << v.get<std::string>();
    } else if (v.is_boolean()) {
      out << v.get<bool>();
    } else if (v.is_array()) {
      out << YAML::Flow << YAML::BeginSeq;
      for (const auto& x : v) out << x.dump();
      out << YAML::EndSeq;
    } else {
      out << v.dump();  // JSON's shortest round-trip text of the number
    }
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

namespace {

class YamlReader : public CLI::Config {
 public:
  std::string to_config(const CLI::App*, bool, bool, std::string) const override {
    return {};  // mlai writes its files with config_yaml
  }

  std::vector<CLI::ConfigItem> from_config(std::istream& in) const override {
    YAML::Node root;
    try {
      root = YAML::Load(in);
    } catch (const YAML::Exception& e) {
      throw CLI::ConfigError("line " + std::to_string(e.mark.line + 1) + ", column " +
                             std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    std::vector<CLI::ConfigItem> items;
    if (root.IsNull()) return items;  // an empty file
    if (!root.IsMap()) throw CLI::ConfigError("expected a mapping of key: value lines");
    std::set<std::string> seen;
    for (const auto& kv : root) {
      if (!kv.first.IsScalar())
        throw CLI::ConfigError("a key must be a name, not a list or mapping");
      CLI::ConfigItem item;
      item.name = kv.first.Scalar();
      std::replace(item.name.begin(), item.name.end(), '_', '-');
      if (!seen.insert(item.name).second)
        throw CLI::ConfigError("'" + item.name + "' is given twice");
      const YAML::Node& v = kv.second;
      if (v.IsNull()) continue;  // not given
      if (v.IsMap())
        throw CLI::ConfigError("'" + item.name +
                               "' holds a mapping: every setting is a top-level "
                               "key: value line");
      if (v.IsSequence()) {
        for (const auto& x : v) {
          if (!x.IsScalar())
            throw CLI::ConfigError("'" + item.name + "' must be a value or a list of values");
          item.inputs.push_back(x.Scalar());
        }
      } else if (item.name == "fast-dev-run" && v.Scalar() == "false") {
        continue;  // Lightning's fast_dev_run: false, off (0 is off as a number already)
      } else if (item.name == "fast-dev-run" && v.Scalar() == "true") {
        item.inputs.push_back("1");  // Lightning's fast_dev_run: true, one batch
      } else {
        item.inputs.push_back(v.Scalar());
      }
      items.push_back(std::move(item));
    }
    return items;
  }
};

}  // namespace

std::shared_ptr<CLI::Config> yaml_config_reader() { return std::make_shared<YamlReader>(); }

}  // namespace mlai::nn
