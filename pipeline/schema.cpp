#include "pipeline/schema.h"

#include <stdexcept>

namespace flowrun {

const char* to_string(StageKind kind) {
  switch (kind) {
    case StageKind::Source: return "source";
    case StageKind::Transform: return "transform";
    case StageKind::Serial: return "serial";
    case StageKind::Component: return "component";
  }
  return "?";
}

namespace {
ParamSpec make(std::string name, ValueType type, std::string doc) {
  ParamSpec spec;
  spec.name = std::move(name);
  spec.type = type;
  spec.doc = std::move(doc);
  return spec;
}
}  // namespace

ParamSpec Int(std::string name, std::string doc) { return make(std::move(name), ValueType::Int, std::move(doc)); }
ParamSpec Float(std::string name, std::string doc) { return make(std::move(name), ValueType::Float, std::move(doc)); }
ParamSpec String(std::string name, std::string doc) { return make(std::move(name), ValueType::String, std::move(doc)); }
ParamSpec Bool(std::string name, std::string doc) { return make(std::move(name), ValueType::Bool, std::move(doc)); }
ParamSpec Path(std::string name, std::string doc) { return make(std::move(name), ValueType::Path, std::move(doc)); }
ParamSpec IntList(std::string name, std::string doc) { return make(std::move(name), ValueType::IntList, std::move(doc)); }
ParamSpec FloatList(std::string name, std::string doc) { return make(std::move(name), ValueType::FloatList, std::move(doc)); }
ParamSpec StringList(std::string name, std::string doc) { return make(std::move(name), ValueType::StringList, std::move(doc)); }

ParamSpec StageRef(std::string name, std::string doc, std::string role) {
  ParamSpec spec = String(std::move(name), std::move(doc) + "; auto = the phase's one " + role + " stage");
  spec.def(Auto{}).or_auto();
  spec.role = std::move(role);
  return spec;
}

ParamSpec OptionalStageRef(std::string name, std::string doc, std::string role) {
  ParamSpec spec = String(std::move(name), std::move(doc) + "; auto = the phase's one " + role + " stage, or none; \"\" = none");
  spec.def(Auto{}).or_auto();
  spec.role = std::move(role);
  spec.role_optional = true;
  return spec;
}

std::string ParamSpec::format_bound(double bound) const {
  bool integral = type == ValueType::Int || type == ValueType::IntList;
  return integral ? std::to_string(static_cast<int64_t>(bound)) : format_value(bound);
}

const ParamSpec* Schema::find(const std::string& name) const {
  for (const auto& spec : params_)
    if (spec.name == name) return &spec;
  return nullptr;
}

std::vector<std::string> Schema::param_names() const {
  std::vector<std::string> names;
  for (const auto& spec : params_) names.push_back(spec.name);
  return names;
}

const std::vector<ParamSpec>& engine_params(StageKind kind) {
  static const std::vector<ParamSpec> transform = {
      Int("concurrency", "items processed at once; auto = --threads").def(Auto{}).or_auto().range(1, 1024)};
  static const std::vector<ParamSpec> none;
  return kind == StageKind::Transform ? transform : none;
}

const Value& Params::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::logic_error("no parameter '" + name + "'");
  return it->second;
}

namespace {
template <class T>
const T& typed(const Value& value, const std::string& name, const char* what) {
  if (const T* v = std::get_if<T>(&value)) return *v;
  throw std::logic_error("parameter '" + name + "' is not " + what);
}
}  // namespace

bool Params::is_auto(const std::string& name) const { return std::holds_alternative<Auto>(value(name)); }
int64_t Params::get_int(const std::string& name) const { return typed<int64_t>(value(name), name, "an int"); }
double Params::get_float(const std::string& name) const {
  const Value& v = value(name);
  if (const int64_t* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return typed<double>(v, name, "a float");
}
const std::string& Params::get_string(const std::string& name) const {
  return typed<std::string>(value(name), name, "a string");
}
bool Params::get_bool(const std::string& name) const { return typed<bool>(value(name), name, "a bool"); }
const std::vector<int64_t>& Params::get_int_list(const std::string& name) const {
  return typed<std::vector<int64_t>>(value(name), name, "a list of ints");
}
const std::vector<double>& Params::get_float_list(const std::string& name) const {
  return typed<std::vector<double>>(value(name), name, "a list of floats");
}
const std::vector<std::string>& Params::get_string_list(const std::string& name) const {
  return typed<std::vector<std::string>>(value(name), name, "a list of strings");
}
int64_t Params::get_int_or(const std::string& name, int64_t fallback) const {
  return is_auto(name) ? fallback : get_int(name);
}

}  // namespace flowrun
