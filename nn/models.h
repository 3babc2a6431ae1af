// Models by name. A model file defines a factory and registers it with MLAI_REGISTER_MODEL, so
// adding a model touches one file (the library is linked whole-archive so registrations stay).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace mlai::nn {

struct ModelSpec {
  int64_t height = 28, width = 28, channels = 1;
  int num_classes = 10;
  std::vector<int64_t> hidden;  // widths for MLPs; empty: the model's default
  double dropout = 0.0;
  uint64_t seed = 0;
};

using ModelFactory = std::function<std::shared_ptr<Module>(const ModelSpec&)>;

bool register_model(const std::string& name, ModelFactory f);
std::shared_ptr<Module> make_model(const std::string& name, const ModelSpec& spec);
std::vector<std::string> model_names();

#define MLAI_REGISTER_MODEL(NAME, FACTORY) \
  static const bool mlai_registered_##FACTORY = ::mlai::nn::register_model(NAME, FACTORY)

}  // namespace mlai::nn
