// Stage types by name. Built-in stages register with FLOWRUN_REGISTER_STAGE
// in their own .cpp (compiled as an object library, so the linker cannot drop
// them); plugins register theirs through their entry point.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "pipeline/schema.h"
#include "pipeline/stage.h"

namespace flowrun {

using StageMaker = std::function<std::unique_ptr<Stage>(const StageInit&)>;

struct StageType {
  Schema schema;
  StageMaker make;
  std::string origin;  // "built-in" or the plugin file
};

template <class T>
constexpr StageKind kind_of() {
  static_assert(std::is_base_of_v<Stage, T>, "a stage derives from one of the stage kinds");
  if constexpr (std::is_base_of_v<SourceStage, T>) return StageKind::Source;
  else if constexpr (std::is_base_of_v<TransformStage, T>) return StageKind::Transform;
  else if constexpr (std::is_base_of_v<SerialStage, T>) return StageKind::Serial;
  else return StageKind::Component;
}

class Registry {
 public:
  static Registry& global();

  // T needs `static Schema schema()` and a constructor from `const StageInit&`:
  // a stage without a schema does not compile.
  template <class T>
  void add() {
    Schema schema = T::schema();
    schema.set_kind(kind_of<T>());
    add(std::move(schema), [](const StageInit& init) { return std::make_unique<T>(init); });
  }
  // Throws std::runtime_error when the type name is taken.
  void add(Schema schema, StageMaker make);

  // Where the stages being added come from ("built-in" or a plugin file);
  // the plugin loader sets it around a plugin's registration.
  void set_origin(std::string origin) { origin_ = std::move(origin); }

  const StageType* find(const std::string& type) const;
  std::vector<std::string> types() const;  // sorted

 private:
  std::map<std::string, StageType> types_;
  std::string origin_ = "built-in";
};

}  // namespace flowrun

#define FLOWRUN_CONCAT_INNER(a, b) a##b
#define FLOWRUN_CONCAT(a, b) FLOWRUN_CONCAT_INNER(a, b)
#define FLOWRUN_REGISTER_STAGE(T)                                                         \
  static const bool FLOWRUN_CONCAT(flowrun_registered_, __LINE__) = [] {                  \
    ::flowrun::Registry::global().add<T>();                                               \
    return true;                                                                          \
  }()
