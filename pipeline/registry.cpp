#include "pipeline/registry.h"

#include <cxxabi.h>

#include <cstdlib>
#include <stdexcept>

namespace flowrun {

std::string demangle(const char* name) {
  int status = 0;
  char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && readable ? readable : name;
  std::free(readable);
  return result;
}

Registry& Registry::global() {
  static Registry registry;
  return registry;
}

void Registry::add(Schema schema, StageMaker make) {
  const std::string& origin = origin_;
  const std::string type = schema.type();
  auto it = types_.find(type);
  if (it != types_.end())
    throw std::runtime_error("stage type '" + type + "' from " + origin + " is already registered by " +
                             it->second.origin);
  types_.emplace(type, StageType{std::move(schema), std::move(make), origin});
}

const StageType* Registry::find(const std::string& type) const {
  auto it = types_.find(type);
  return it == types_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::types() const {
  std::vector<std::string> names;
  for (const auto& [name, type] : types_) names.push_back(name);
  return names;
}

}  // namespace flowrun
