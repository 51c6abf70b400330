// A stage's contract: its type name, one-line doc, kind and typed parameters
// (with defaults, ranges, choices). Validation, `--list-stages` and the docs
// all come from this one declaration, written next to the stage.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/value.h"

namespace flowrun {

struct ResolvedGraph;
struct ResolvedPhase;
struct ResolvedStage;

// How a stage sits in the flow; set from the stage's base class.
enum class StageKind {
  Source,     // produces items, no input
  Transform,  // one item in, the same item out; may run on several threads
  Serial,     // sees items in order on one thread, emits zero or more
  Component,  // not in the flow: a service other stages use (optimizer...)
};
const char* to_string(StageKind kind);

struct ParamSpec {
  std::string name;
  ValueType type = ValueType::Int;
  std::string doc;
  std::optional<Value> default_value;  // none: the parameter is required
  std::optional<double> min, max;      // inclusive bounds for numbers (each list element too)
  std::vector<std::string> choices;    // allowed words for strings
  bool allow_auto = false;             // accepts the keyword `auto`
  // A stage reference: the name of another stage of the phase that has
  // this role (see Schema::provides). `auto` (its default) takes the one
  // stage with the role, or none ("") when the reference is optional.
  std::string role;
  bool role_optional = false;

  ParamSpec& def(Value value) { default_value = std::move(value); return *this; }
  ParamSpec& at_least(double lo) { min = lo; return *this; }
  ParamSpec& at_most(double hi) { max = hi; return *this; }
  ParamSpec& range(double lo, double hi) { min = lo; max = hi; return *this; }
  ParamSpec& one_of(std::vector<std::string> words) { choices = std::move(words); return *this; }
  ParamSpec& or_auto() { allow_auto = true; return *this; }
  bool required() const { return !default_value.has_value(); }
  // A bound written as this parameter's type writes it (3, not 3.0, for ints).
  std::string format_bound(double bound) const;
};

// Shorthands for the common parameter types.
ParamSpec Int(std::string name, std::string doc);
ParamSpec Float(std::string name, std::string doc);
ParamSpec String(std::string name, std::string doc);
ParamSpec Bool(std::string name, std::string doc);
ParamSpec Path(std::string name, std::string doc);
ParamSpec IntList(std::string name, std::string doc);
ParamSpec FloatList(std::string name, std::string doc);
ParamSpec StringList(std::string name, std::string doc);
// The name of another stage that has `role` ("model", "optimizer"...);
// `auto` by default. An optional one may be "" (none).
ParamSpec StageRef(std::string name, std::string doc, std::string role);
ParamSpec OptionalStageRef(std::string name, std::string doc, std::string role);

// The validated parameter values of one stage instance: every schema
// parameter has a value (given or default). Accessors throw std::logic_error
// on a name or type the schema does not declare: a programming error.
class Params {
 public:
  Params() = default;
  explicit Params(std::map<std::string, Value> values) : values_(std::move(values)) {}

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool is_auto(const std::string& name) const;
  const Value& value(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  double get_float(const std::string& name) const;  // ints widen
  const std::string& get_string(const std::string& name) const;  // also paths
  bool get_bool(const std::string& name) const;
  const std::vector<int64_t>& get_int_list(const std::string& name) const;
  const std::vector<double>& get_float_list(const std::string& name) const;
  const std::vector<std::string>& get_string_list(const std::string& name) const;
  // An int parameter that may be `auto`: returns fallback for auto.
  int64_t get_int_or(const std::string& name, int64_t fallback) const;

  const std::map<std::string, Value>& values() const { return values_; }
  void set(const std::string& name, Value value) { values_[name] = std::move(value); }
  bool operator==(const Params& other) const { return values_ == other.values_; }
  bool operator!=(const Params& other) const { return !(*this == other); }

 private:
  std::map<std::string, Value> values_;
};

class Schema {
 public:
  Schema(std::string type, std::string doc) : type_(std::move(type)), doc_(std::move(doc)) {}

  Schema& param(ParamSpec spec) { params_.push_back(std::move(spec)); return *this; }
  // A rule across parameters, checked with the rest of the graph before
  // anything runs: returns "" when the values are fine, else the problem.
  using Check = std::function<std::string(const Params&)>;
  Schema& check(Check rule) { checks_.push_back(std::move(rule)); return *this; }
  const std::vector<Check>& checks() const { return checks_; }
  // A rule across stages, checked with the resolved graph before anything
  // runs (so at --check too), after the stage references are resolved:
  // the op is `stage.ops[op]` in `phase`. Returns "" when the graph is
  // fine, else the problem, reported at the op's place.
  using GraphCheck = std::function<std::string(const ResolvedGraph& graph, const ResolvedPhase& phase,
                                                const ResolvedStage& stage, size_t op)>;
  Schema& graph_check(GraphCheck rule) { graph_checks_.push_back(std::move(rule)); return *this; }
  const std::vector<GraphCheck>& graph_checks() const { return graph_checks_; }
  // A role this stage plays for others (a model, an optimizer...): what
  // their stage references (StageRef) look for.
  Schema& provides(std::string role) { roles_.push_back(std::move(role)); return *this; }
  const std::vector<std::string>& roles() const { return roles_; }
  // The stage's output depends on random draws made anew every epoch (an
  // augmentation): a stage that keeps results across epochs (a cache of
  // computed features) must not rely on what comes through it.
  Schema& randomized() { randomized_ = true; return *this; }
  bool is_randomized() const { return randomized_; }

  const std::string& type() const { return type_; }
  const std::string& doc() const { return doc_; }
  StageKind kind() const { return kind_; }
  void set_kind(StageKind kind) { kind_ = kind; }
  const std::vector<ParamSpec>& params() const { return params_; }
  const ParamSpec* find(const std::string& name) const;
  std::vector<std::string> param_names() const;

 private:
  std::string type_;
  std::string doc_;
  StageKind kind_ = StageKind::Transform;
  std::vector<ParamSpec> params_;
  std::vector<Check> checks_;
  std::vector<GraphCheck> graph_checks_;
  std::vector<std::string> roles_;
  bool randomized_ = false;
};

// Engine parameters every flow stage (not sources) accepts besides its own.
// `concurrency`: how many items the stage may process at once (Transform only).
const std::vector<ParamSpec>& engine_params(StageKind kind);

}  // namespace flowrun
