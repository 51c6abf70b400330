#include "pipeline/value.h"

#include <iomanip>
#include <sstream>

namespace flowrun {

const char* to_string(ValueType type) {
  switch (type) {
    case ValueType::Int: return "int";
    case ValueType::Float: return "float";
    case ValueType::String: return "string";
    case ValueType::Bool: return "bool";
    case ValueType::Path: return "path";
    case ValueType::IntList: return "list<int>";
    case ValueType::FloatList: return "list<float>";
    case ValueType::StringList: return "list<string>";
  }
  return "?";
}

namespace {

std::string quote(const std::string& text) {
  std::ostringstream out;
  out << std::quoted(text);
  return out.str();
}

std::string format_float(double value) {
  std::ostringstream out;
  out << std::setprecision(10) << value;
  std::string text = out.str();
  // Keep floats recognisable as floats when printed back.
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

template <class T, class F>
std::string format_list(const std::vector<T>& items, F&& format_one) {
  std::string text = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) text += ", ";
    text += format_one(items[i]);
  }
  return text + "]";
}

}  // namespace

std::string format_value(const Value& value) {
  struct Formatter {
    std::string operator()(const Auto&) const { return "auto"; }
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return format_float(v); }
    std::string operator()(const std::string& v) const { return quote(v); }
    std::string operator()(bool v) const { return v ? "true" : "false"; }
    std::string operator()(const std::vector<int64_t>& v) const {
      return format_list(v, [](int64_t x) { return std::to_string(x); });
    }
    std::string operator()(const std::vector<double>& v) const {
      return format_list(v, format_float);
    }
    std::string operator()(const std::vector<std::string>& v) const {
      return format_list(v, quote);
    }
  };
  return std::visit(Formatter{}, value);
}

}  // namespace flowrun
