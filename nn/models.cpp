// The model registry.
#include "nn/models.h"

#include <map>
#include <stdexcept>

namespace mlai::nn {

namespace {
std::map<std::string, ModelFactory>& registry() {
  static std::map<std::string, ModelFactory> r;
  return r;
}
}  // namespace

bool register_model(const std::string& name, ModelFactory f) {
  registry()[name] = std::move(f);
  return true;
}

std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (auto& [n, f] : registry()) out.push_back(n);
  return out;
}

std::shared_ptr<Module> make_model(const std::string& name, const ModelSpec& spec) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string names;
    for (auto& n : model_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown --arch '" + name + "' (available: " + names + ")");
  }
  return it->second(spec);
}

}  // namespace mlai::nn
