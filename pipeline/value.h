// Typed parameter values of the graph language: int, float, string, bool,
// path (a string resolved relative to the graph file), lists of those, and
// the keyword `auto`.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace flowrun {

enum class ValueType { Int, Float, String, Bool, Path, IntList, FloatList, StringList };

const char* to_string(ValueType type);

struct Auto {
  bool operator==(const Auto&) const { return true; }
};

// One parameter value after validation. Lists keep their element type.
using Value = std::variant<Auto, int64_t, double, std::string, bool, std::vector<int64_t>,
                           std::vector<double>, std::vector<std::string>>;

// Renders a value the way the graph language writes it (strings quoted).
std::string format_value(const Value& value);

}  // namespace flowrun
