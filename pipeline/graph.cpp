#include "pipeline/graph.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <sstream>

namespace flowrun {

const Schema& run_schema() {
  static const Schema schema = Schema("run", "settings of the whole run")
      .param(Int("seed", "seed of every random choice").def(int64_t{0}).at_least(0))
      .param(Int("in_flight", "source items alive at once per flow (bounds memory)").def(int64_t{256}).range(2, 1 << 24))
      .param(Int("epochs", "epochs when the graph declares no phase").def(int64_t{1}).range(0, 1000000))
      .param(Int("threads", "worker threads (the command line's --threads wins)").def(Auto{}).or_auto().range(1, 1024))
      .param(Int("compute_threads", "threads a model stage's tensor kernels use (LibTorch intra-op); auto = the "
                                    "worker threads the rest of its flow leaves free").def(Auto{}).or_auto().range(1, 1024))
      .param(String("backend", "collectives of a job of several processes: auto (NCCL when the model is on CUDA, "
                               "else Gloo), gloo or nccl").def(std::string("auto")).one_of({"auto", "gloo", "nccl"}))
      .param(Float("timeout", "seconds a job's ranks wait for each other (rendezvous, every collective) before "
                              "giving up").def(600.0).range(1, 86400));
  return schema;
}

const Schema& phase_schema() {
  static const Schema schema =
      Schema("phase", "a named run of epochs").param(Int("epochs", "epochs in this phase").def(int64_t{1}).range(0, 1000000));
  return schema;
}

bool ResolvedStage::same_config(const ResolvedStage& other) const {
  if (ops.size() != other.ops.size() || concurrency != other.concurrency) return false;
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i].type != other.ops[i].type || ops[i].params != other.ops[i].params) return false;
  return true;
}

const ResolvedStage* ResolvedPhase::find(const std::string& name) const {
  for (const auto& stage : stages)
    if (stage.name == name) return &stage;
  return nullptr;
}

namespace {

std::string where_text(const Location& where) {
  return std::to_string(where.line) + ":" + std::to_string(where.col);
}

std::string kind_name(RawValue::Kind kind) {
  switch (kind) {
    case RawValue::Kind::Int: return "an int";
    case RawValue::Kind::Float: return "a float";
    case RawValue::Kind::String: return "a string";
    case RawValue::Kind::Word: return "a word";
    case RawValue::Kind::List: return "a list";
  }
  return "?";
}

class Resolver {
 public:
  Resolver(const GraphSpec& spec, const Registry& registry, Diagnostics& diagnostics)
      : spec_(spec), registry_(registry), diagnostics_(diagnostics) {
    graph_dir_ = std::filesystem::path(spec.file).parent_path().string();
    if (graph_dir_.empty()) graph_dir_ = ".";
  }

  ResolvedGraph resolve(const std::vector<CommandLineOverride>& overrides) {
    ResolvedGraph graph;
    graph.file = spec_.file;
    for (const auto& plugin : spec_.plugins) graph.plugins.push_back(plugin.path);

    // Run settings.
    Params run = typed_params(run_schema(), spec_.run_settings, {spec_.file, 0, 0}, "the run line", graph_dir_);

    // Top-level stages.
    std::map<std::string, Location> names;
    for (const auto& decl : spec_.stages) {
      auto [it, fresh] = names.emplace(decl.name, decl.where);
      if (!fresh) {
        error(decl.where, "duplicate stage name '" + decl.name + "' (first declared at " + where_text(it->second) + ")");
        continue;
      }
      top_.push_back(resolve_stage(decl, graph_dir_));
    }
    for (const auto& phase : spec_.phases) {
      if (phase.name == "run") error(phase.where, "'run' is reserved; choose another phase name");
      auto [it, fresh] = names.emplace(phase.name, phase.where);
      if (!fresh) error(phase.where, "phase name '" + phase.name + "' is already used (at " + where_text(it->second) + ")");
    }

    graph.chains = resolve_flows();
    graph.joined = joined_;

    // Phases: the top-level stages, with each phase's redeclarations and overrides.
    if (spec_.phases.empty()) {
      ResolvedPhase phase;
      phase.name = "main";
      phase.epochs = run.get_int("epochs");
      phase.stages = top_;
      graph.phases.push_back(std::move(phase));
      graph.implicit_phase = true;
    }
    for (const auto& decl : spec_.phases) graph.phases.push_back(resolve_phase(decl));
    for (const auto& setting : spec_.run_settings)
      if (setting.name == "epochs" && !spec_.phases.empty())
        graph.warnings.push_back(spec_.file + ":" + where_text(setting.where) + ": run epochs= applies to a graph without phases; " +
                                 phase_epochs(graph) + ": set each phase's epochs");

    apply_command_line(overrides, graph, run);
    resolve_stage_refs(graph);  // first: a schema's rule may look at the stages its references name
    check_ops(graph);
    if (diagnostics_.empty()) check_across_stages(graph);  // on a graph whose every op is valid

    graph.run.seed = static_cast<uint64_t>(run.get_int("seed"));
    graph.run.in_flight = run.get_int("in_flight");
    graph.run.epochs = run.get_int("epochs");
    graph.run.threads = run.get_int_or("threads", 0);
    graph.run.compute_threads = run.get_int_or("compute_threads", 0);
    graph.run.backend = run.get_string("backend");
    graph.run.timeout_s = run.get_float("timeout");
    return graph;
  }

 private:
  void error(const Location& where, std::string message) { diagnostics_.error(where, std::move(message)); }

  // Converts one written value to the parameter's type, checking range and choices.
  bool convert(const ParamSpec& spec, const RawValue& raw, const std::string& base_dir, Value& out) {
    auto mismatch = [&](const std::string& expected) {
      error(raw.where, "parameter '" + spec.name + "' expects " + expected + " but got " + kind_name(raw.kind) +
                           (raw.kind == RawValue::Kind::List ? "" : " '" + raw.text + "'"));
      return false;
    };
    if (raw.kind == RawValue::Kind::Word && raw.text == "auto" && spec.type != ValueType::String &&
        spec.type != ValueType::Path) {
      if (!spec.allow_auto) return mismatch(std::string(to_string(spec.type)) + " (auto is not allowed here)");
      out = Auto{};
      return true;
    }
    auto in_range = [&](double v, const RawValue& at) {
      if ((spec.min && v < *spec.min) || (spec.max && v > *spec.max)) {
        std::ostringstream bounds;
        bounds << "[" << (spec.min ? spec.format_bound(*spec.min) : "-inf") << ", "
               << (spec.max ? spec.format_bound(*spec.max) : "inf") << "]";
        error(at.where, "parameter '" + spec.name + "' = " + at.text + " is out of range " + bounds.str());
        return false;
      }
      return true;
    };
    auto scalar_int = [&](const RawValue& r, int64_t& v) {
      if (r.kind != RawValue::Kind::Int) return false;
      v = r.int_value;
      return in_range(static_cast<double>(v), r) || (v = 0, false);
    };
    auto scalar_float = [&](const RawValue& r, double& v) {
      if (r.kind == RawValue::Kind::Int) v = static_cast<double>(r.int_value);
      else if (r.kind == RawValue::Kind::Float) v = r.float_value;
      else return false;
      if (!std::isfinite(v)) return false;
      return in_range(v, r);
    };
    auto scalar_string = [&](const RawValue& r, std::string& v) {
      if (r.kind != RawValue::Kind::String && r.kind != RawValue::Kind::Word) return false;
      v = r.text;
      if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
        error(r.where, "parameter '" + spec.name + "' cannot be '" + v + "'" + did_you_mean(v, spec.choices) +
                           " (choices: " + join_names(spec.choices) + ")");
        return false;
      }
      return true;
    };
    size_t errors_before = diagnostics_.size();
    auto list_of = [&](auto& vec, auto&& convert_one, const char* expected) {
      if (raw.kind != RawValue::Kind::List) return mismatch(expected);
      for (const auto& item : raw.items) {
        typename std::decay_t<decltype(vec)>::value_type v{};
        if (!convert_one(item, v)) {
          if (diagnostics_.size() == errors_before)
            error(item.where, "parameter '" + spec.name + "' expects " + expected + " but an item is " +
                                  kind_name(item.kind) + " '" + item.text + "'");
          return false;
        }
        vec.push_back(v);
      }
      out = vec;
      return true;
    };
    switch (spec.type) {
      case ValueType::Int: {
        int64_t v = 0;
        if (raw.kind != RawValue::Kind::Int) return mismatch("an int");
        if (!scalar_int(raw, v)) return false;
        out = v;
        return true;
      }
      case ValueType::Float: {
        double v = 0;
        if (raw.kind != RawValue::Kind::Int && raw.kind != RawValue::Kind::Float) return mismatch("a float");
        if (!scalar_float(raw, v)) return diagnostics_.size() == errors_before ? mismatch("a finite float") : false;
        out = v;
        return true;
      }
      case ValueType::Bool:
        if (raw.kind == RawValue::Kind::Word && (raw.text == "true" || raw.text == "false")) {
          out = raw.text == "true";
          return true;
        }
        return mismatch("a bool (true or false)");
      case ValueType::String: {
        std::string v;
        if (raw.kind != RawValue::Kind::String && raw.kind != RawValue::Kind::Word) return mismatch("a string");
        if (!scalar_string(raw, v)) return false;
        out = v;
        return true;
      }
      case ValueType::Path: {
        if (raw.kind != RawValue::Kind::String && raw.kind != RawValue::Kind::Word) return mismatch("a path");
        std::filesystem::path path(raw.text);
        if (!raw.text.empty() && path.is_relative()) path = std::filesystem::path(base_dir) / path;
        out = path.lexically_normal().string();
        return true;
      }
      case ValueType::IntList: {
        std::vector<int64_t> v;
        return list_of(v, scalar_int, "a list of ints");
      }
      case ValueType::FloatList: {
        std::vector<double> v;
        return list_of(v, scalar_float, "a list of floats");
      }
      case ValueType::StringList: {
        std::vector<std::string> v;
        return list_of(v, scalar_string, "a list of strings");
      }
    }
    return false;
  }

  // Typed values for all of a schema's parameters from what was written.
  Params typed_params(const Schema& schema, const std::vector<ParamAssign>& given, const Location& owner_where,
                      const std::string& owner, const std::string& base_dir,
                      const std::vector<ParamSpec>& extra = {}, std::map<std::string, Value>* extra_out = nullptr,
                      bool defer_required = false) {
    std::map<std::string, Value> values;
    std::map<std::string, Location> seen;
    for (const auto& assign : given) {
      auto [it, fresh] = seen.emplace(assign.name, assign.where);
      if (!fresh) {
        error(assign.where, "parameter '" + assign.name + "' given twice for " + owner + " (first at " +
                                where_text(it->second) + ")");
        continue;
      }
      const ParamSpec* spec = schema.find(assign.name);
      bool is_extra = false;
      if (!spec)
        for (const auto& e : extra)
          if (e.name == assign.name) spec = &e, is_extra = true;
      if (!spec) {
        std::vector<std::string> known = schema.param_names();
        for (const auto& e : extra) known.push_back(e.name);
        error(assign.where, "unknown parameter '" + assign.name + "' for " + owner + did_you_mean(assign.name, known) +
                                (known.empty() ? " (it takes no parameters)" : " (parameters: " + join_names(known) + ")"));
        continue;
      }
      Value value;
      if (!convert(*spec, assign.value, base_dir, value)) continue;
      (is_extra && extra_out ? *extra_out : values)[assign.name] = value;
    }
    for (const auto& spec : schema.params()) {
      if (values.count(spec.name)) continue;
      if (seen.count(spec.name)) {  // given but invalid (reported): keep going with the default
        if (spec.default_value) values[spec.name] = *spec.default_value;
        continue;
      }
      if (spec.required()) {
        if (defer_required) continue;  // the command line may still give it: check_ops decides
        error(owner_where, "missing required parameter '" + spec.name + "' (" + to_string(spec.type) + ") for " + owner);
        continue;
      }
      values[spec.name] = *spec.default_value;
    }
    return Params(std::move(values));
  }

  ResolvedStage resolve_stage(const StageDecl& decl, const std::string& base_dir) {
    ResolvedStage stage;
    stage.name = decl.name;
    stage.where = decl.where;
    bool concurrency_set = false;
    for (const auto& op_decl : decl.ops) {
      const StageType* type = registry_.find(op_decl.type);
      if (!type) {
        error(op_decl.where, "unknown stage type '" + op_decl.type + "'" + did_you_mean(op_decl.type, registry_.types()) +
                                 " (types: " + join_names(registry_.types()) + "; see --list-stages)");
        continue;
      }
      StageKind kind = type->schema.kind();
      size_t errors_before = diagnostics_.size();
      if (decl.ops.size() > 1 && kind != StageKind::Transform && kind != StageKind::Component) {
        error(op_decl.where, "'" + op_decl.type + "' is a " + to_string(kind) +
                                 " stage; only transforms (or components) can be piped with '|'");
        continue;
      }
      if (!stage.ops.empty() && kind != stage.kind) {
        error(op_decl.where, "'" + op_decl.type + "' is a " + to_string(kind) + " stage but '" + stage.ops[0].type +
                                 "' is a " + to_string(stage.kind) + "; a pipe joins stages of one kind");
        continue;
      }
      stage.kind = kind;
      std::map<std::string, Value> engine_values;
      std::string owner = "stage '" + decl.name + "' (" + op_decl.type + ")";
      ResolvedOp op{op_decl.type, type,
                    typed_params(type->schema, op_decl.params, op_decl.where, owner, base_dir, engine_params(kind),
                                 &engine_values, /*defer_required=*/true),
                    op_decl.where};
      op.params_valid = diagnostics_.size() == errors_before;  // else reported: check_ops leaves it be
      auto concurrency = engine_values.find("concurrency");
      if (concurrency != engine_values.end()) {
        if (concurrency_set) error(op_decl.where, "'concurrency' is set twice in stage '" + decl.name + "'");
        concurrency_set = true;
        stage.concurrency = std::holds_alternative<Auto>(concurrency->second) ? 0 : std::get<int64_t>(concurrency->second);
      }
      stage.ops.push_back(std::move(op));
    }
    return stage;
  }

  const ResolvedStage* find_top(const std::string& name) const {
    for (const auto& stage : top_)
      if (stage.name == name) return &stage;
    return nullptr;
  }
  std::vector<std::string> top_names() const {
    std::vector<std::string> names;
    for (const auto& stage : top_) names.push_back(stage.name);
    return names;
  }

  std::vector<std::vector<std::string>> resolve_flows() {
    std::vector<std::string> flow_stages;  // declaration order
    for (const auto& stage : top_)
      if (!stage.ops.empty() && stage.kind != StageKind::Component) flow_stages.push_back(stage.name);

    std::map<std::string, std::string> next, prev;
    std::map<std::string, Location> mentioned;
    std::set<std::string> reported;  // in a link already reported: no follow-up errors
    if (spec_.flows.empty()) {
      // No flow lines: the flow stages form one chain in the order written.
      for (size_t i = 1; i < flow_stages.size(); ++i) {
        next[flow_stages[i - 1]] = flow_stages[i];
        prev[flow_stages[i]] = flow_stages[i - 1];
      }
      for (const auto& name : flow_stages) mentioned[name] = find_top(name)->where;
    }
    std::set<std::string> joined_names;
    for (const auto& flow : spec_.flows) {
      for (size_t j = 0; j < flow.joined.size(); ++j) {
        const std::string& name = flow.joined[j];
        const Location& where = flow.joined_where[j];
        const ResolvedStage* stage = find_top(name);
        if (!stage) {
          error(where, "dangling connection: no stage named '" + name + "'" + did_you_mean(name, top_names()));
          continue;
        }
        if (stage->kind != StageKind::Source) {
          error(where, "stage '" + name + "' is joined to '" + flow.names.front() +
                           "' with '+' but is not a source; only sources join a flow ('flow source + target -> ...')");
          mentioned.emplace(name, where);  // reported here: no follow-up errors
          reported.insert(name);
          continue;
        }
        if (mentioned.count(name)) {
          error(where, "source '" + name + "' is already in a flow; a source feeds one flow");
          continue;
        }
        mentioned.emplace(name, where);
        joined_names.insert(name);
        joined_[flow.names.front()].push_back(name);
      }
      for (size_t i = 0; i < flow.names.size(); ++i) {
        const std::string& name = flow.names[i];
        const Location& where = flow.where[i];
        const ResolvedStage* stage = find_top(name);
        if (!stage) {
          error(where, "dangling connection: no stage named '" + name + "'" + did_you_mean(name, top_names()));
          if (i + 1 < flow.names.size()) reported.insert(flow.names[i + 1]);
          continue;
        }
        if (stage->kind == StageKind::Component) {
          error(where, "stage '" + name + "' is a component; components take no part in a flow");
          continue;
        }
        if (joined_names.count(name)) {
          error(where, "source '" + name + "' is joined to a flow with '+'; a source feeds one flow");
          continue;
        }
        mentioned.emplace(name, where);
        if (i == 0) continue;
        const std::string& from = flow.names[i - 1];
        if (!find_top(from)) continue;
        if (stage->kind == StageKind::Source) {
          error(where, "source stage '" + name + "' cannot take input (from '" + from + "')");
          continue;
        }
        if (name == from) {
          error(where, "cycle in flow: " + from + " -> " + name);
          reported.insert(name);
          continue;
        }
        if (next.count(from) && next[from] != name) {
          error(where, "stage '" + from + "' already feeds '" + next[from] + "'; a stage feeds at most one stage");
          reported.insert(name);
          continue;
        }
        if (prev.count(name) && prev[name] != from) {
          error(where, "stage '" + name + "' already takes input from '" + prev[name] + "'; a stage has at most one input");
          reported.insert(from);
          continue;
        }
        // Would from -> name close a loop?
        std::string walk = name;
        std::vector<std::string> path = {from, name};
        bool cycle = false;
        while (next.count(walk)) {
          walk = next[walk];
          path.push_back(walk);
          if (walk == from) { cycle = true; break; }
        }
        if (cycle) {
          std::string text;
          for (size_t k = 0; k < path.size(); ++k) text += (k ? " -> " : "") + path[k];
          error(where, "cycle in flow: " + text);
          reported.insert(path.begin(), path.end());
          continue;
        }
        next[from] = name;
        prev[name] = from;
      }
    }

    std::vector<std::vector<std::string>> chains;
    for (const auto& name : flow_stages) {
      const ResolvedStage* stage = find_top(name);
      if (!mentioned.count(name)) {
        error(stage->where, "stage '" + name + "' is not connected; add it to a flow line");
        continue;
      }
      if (prev.count(name) || reported.count(name) || joined_names.count(name)) continue;  // not a chain head
      if (stage->kind != StageKind::Source) {
        error(mentioned[name], "stage '" + name + "' has no input; a flow starts with a source stage");
        continue;
      }
      std::vector<std::string> chain = {name};
      while (next.count(chain.back())) chain.push_back(next[chain.back()]);
      chains.push_back(std::move(chain));
    }
    // Flows run in the order they are written (by where their source is first named).
    std::stable_sort(chains.begin(), chains.end(), [&](const auto& a, const auto& b) {
      const Location& la = mentioned[a.front()];
      const Location& lb = mentioned[b.front()];
      return std::tie(la.line, la.col) < std::tie(lb.line, lb.col);
    });
    bool any_source = false;
    for (const auto& stage : top_) any_source |= stage.kind == StageKind::Source && !stage.ops.empty();
    if (!any_source && diagnostics_.empty()) error({spec_.file, 0, 0}, "the graph has no source stage");
    return chains;
  }

  ResolvedStage* find_in(std::vector<ResolvedStage>& stages, const std::string& name) {
    for (auto& stage : stages)
      if (stage.name == name) return &stage;
    return nullptr;
  }

  ResolvedPhase resolve_phase(const PhaseDecl& decl) {
    ResolvedPhase phase;
    phase.name = decl.name;
    phase.where = decl.where;
    Params settings = typed_params(phase_schema(), decl.settings, decl.where, "phase '" + decl.name + "'", graph_dir_);
    phase.epochs = settings.get_int("epochs");
    phase.stages = top_;
    std::set<std::string> redeclared;
    for (const auto& stage_decl : decl.stages) {
      if (!redeclared.insert(stage_decl.name).second) {
        error(stage_decl.where, "stage '" + stage_decl.name + "' is declared twice in phase '" + decl.name + "'");
        continue;
      }
      ResolvedStage stage = resolve_stage(stage_decl, graph_dir_);
      if (stage.ops.size() != stage_decl.ops.size()) continue;
      ResolvedStage* existing = find_in(phase.stages, stage.name);
      if (!existing) {
        if (stage.kind != StageKind::Component)
          error(stage_decl.where, "stage '" + stage.name + "' is not declared outside the phase; a phase may add "
                                  "components but flow stages are declared at top level");
        else
          phase.stages.push_back(std::move(stage));
        continue;
      }
      if (existing->kind != stage.kind) {
        error(stage_decl.where, "stage '" + stage.name + "' is a " + to_string(existing->kind) +
                                    " stage; phase '" + decl.name + "' cannot make it a " + to_string(stage.kind));
        continue;
      }
      *existing = std::move(stage);
    }
    for (const auto& override_ : decl.overrides) apply_override(phase.stages, override_, graph_dir_);
    return phase;
  }

  // Applies STAGE.PARAM=V or STAGE.OP.PARAM=V (path already stripped of any phase prefix).
  void apply_override(std::vector<ResolvedStage>& stages, const ParamOverride& o, const std::string& base_dir,
                      size_t first = 0) {
    const auto& path = o.path;
    const std::string& stage_name = path[first];
    ResolvedStage* stage = find_in(stages, stage_name);
    if (!stage) {
      std::vector<std::string> known;
      for (const auto& s : stages) known.push_back(s.name);
      error(o.path_where[first], "no stage named '" + stage_name + "'" + did_you_mean(stage_name, known));
      return;
    }
    if (stage->ops.empty()) return;  // its declaration already failed
    size_t rest = path.size() - first;
    if (rest != 2 && rest != 3) {
      error(o.path_where[first], "expected STAGE.PARAM or STAGE.OP.PARAM");
      return;
    }
    const std::string& param = path.back();
    const Location& param_where = o.path_where.back();
    const bool names_an_op = std::any_of(stage->ops.begin(), stage->ops.end(), [&](const ResolvedOp& op) {
      return op.type == param && op.stage_type && !op.stage_type->schema.find(param);
    });
    if (rest == 2 && !param.empty() && (std::all_of(param.begin(), param.end(), ::isdigit) || names_an_op)) {
      std::string written;  // the path as given, PHASE. included
      for (size_t i = 0; i < path.size(); ++i) written += (i ? "." : "") + path[i];
      error(param_where, "'" + param + "' selects an op of stage '" + stage_name + "': name its parameter too (" +
                             written + ".PARAM=VALUE)");
      return;
    }
    // The engine's own parameter.
    if (rest == 2 && param == "concurrency" && stage->kind == StageKind::Transform) {
      Value value;
      if (convert(engine_params(StageKind::Transform)[0], o.value, base_dir, value))
        stage->concurrency = std::holds_alternative<Auto>(value) ? 0 : std::get<int64_t>(value);
      return;
    }
    ResolvedOp* op = nullptr;
    if (rest == 3) {
      const std::string& selector = path[first + 1];
      std::vector<std::string> op_types;
      for (auto& candidate : stage->ops) op_types.push_back(candidate.type);
      bool numeric = !selector.empty() && std::all_of(selector.begin(), selector.end(), ::isdigit);
      if (numeric) {
        size_t index = std::stoul(selector);
        if (index < stage->ops.size()) op = &stage->ops[index];
      } else {
        int matches = 0;
        for (auto& candidate : stage->ops)
          if (candidate.type == selector) op = &candidate, ++matches;
        if (matches > 1) {
          error(o.path_where[first + 1], "stage '" + stage_name + "' has several '" + selector +
                                             "' ops; select one by index (" + stage_name + ".0, ...)");
          return;
        }
      }
      if (!op) {
        error(o.path_where[first + 1], "stage '" + stage_name + "' has no op '" + selector + "'" +
                                           did_you_mean(selector, op_types) + " (ops: " + join_names(op_types) + ")");
        return;
      }
    } else {
      std::vector<ResolvedOp*> having;
      for (auto& candidate : stage->ops)
        if (candidate.stage_type->schema.find(param)) having.push_back(&candidate);
      if (having.size() > 1) {
        error(param_where, "parameter '" + param + "' of stage '" + stage_name +
                               "' is ambiguous: several of its ops take it; write " + stage_name + ".OP." + param);
        return;
      }
      op = having.empty() ? &stage->ops.front() : having.front();
    }
    const ParamSpec* spec = op->stage_type->schema.find(param);
    if (!spec) {
      std::vector<std::string> known = op->stage_type->schema.param_names();
      error(param_where, "unknown parameter '" + param + "' for stage '" + stage_name + "' (" + op->type + ")" +
                             did_you_mean(param, known) + " (parameters: " + join_names(known) + ")");
      return;
    }
    Value value;
    if (convert(*spec, o.value, base_dir, value)) {
      // Where it was set and what it was before: a schema check that fails
      // because of this value is reported here (at the --set), not at the op.
      overridden_[op].push_back(
          {param, o.value.where, op->params.has(param) ? std::optional<Value>(op->params.value(param)) : spec->default_value});
      op->params.set(param, value);
    }
  }

  void apply_command_line(const std::vector<CommandLineOverride>& overrides, ResolvedGraph& graph, Params& run) {
    const ResolvedGraph before = graph;  // the graph's own values, to tell a twin left alone
    std::vector<StagePath> stage_paths;  // the STAGE.PARAM... overrides, parsed (with the phase they are for)
    std::string cwd = std::filesystem::current_path().string();
    for (const auto& given : overrides) {
      ParamOverride o;
      if (!parse_override(given.text, given.origin, o, diagnostics_)) continue;
      const std::string& head = o.path.front();
      if (head == "run") {
        if (apply_setting(run_schema(), o, run, "the run line") && o.path[1] == "epochs" && !spec_.phases.empty())
          graph.warnings.push_back("--set run.epochs applies to a graph without phases; " + phase_epochs(graph) +
                                   ": set PHASE.epochs");
        continue;
      }
      ResolvedPhase* phase = nullptr;
      for (auto& p : graph.phases)
        if (p.name == head) phase = &p;
      // A graph without phases runs one, shown as `main`: main.epochs is the
      // run's epochs, main.STAGE.PARAM its stages' (unless a stage is named so).
      const bool implicit = spec_.phases.empty();
      if (phase && implicit && find_top(head)) phase = nullptr;
      if (phase) {
        if (o.path.size() == 2) {
          Params settings;
          settings.set("epochs", implicit ? run.value("epochs") : Value(static_cast<int64_t>(phase->epochs)));
          if (apply_setting(phase_schema(), o, settings, "phase '" + phase->name + "'")) {
            if (implicit) run.set("epochs", settings.value("epochs"));
            else phase->epochs = settings.get_int("epochs");
          }
        } else {
          size_t errors = diagnostics_.size();
          apply_override(phase->stages, o, cwd, 1);
          if (diagnostics_.size() == errors)
            stage_paths.push_back({implicit ? std::string() : phase->name, {o.path.begin() + 1, o.path.end()}});
        }
        continue;
      }
      if (!find_top(head)) {
        std::vector<std::string> known = top_names();
        known.push_back("run");
        for (const auto& p : graph.phases) known.push_back(p.name);
        error(o.path_where[0], "no stage or phase named '" + head + "'" + did_you_mean(head, known));
        continue;
      }
      // STAGE.PARAM on the command line applies in every phase.
      size_t errors = diagnostics_.size();
      for (auto& p : graph.phases) {
        size_t before = diagnostics_.size();
        apply_override(p.stages, o, cwd);
        if (diagnostics_.size() != before) break;  // same error in every phase: report once
      }
      if (diagnostics_.size() == errors) stage_paths.push_back({"", o.path});
    }
    if (spec_.phases.empty()) graph.phases.front().epochs = run.get_int("epochs");
    warn_unchanged_copies(stage_paths, before, graph);
    int64_t epochs = 0;
    for (const auto& p : graph.phases) epochs += p.epochs;
    if (epochs == 0)
      graph.warnings.push_back(std::string("no epoch to run (") +
                               (spec_.phases.empty() ? "epochs=0" : "every phase has epochs=0") +
                               "): the run does nothing and reports no figures");
  }

  // "this graph's phases set their own (head 2, full 6)", for a warning.
  static std::string phase_epochs(const ResolvedGraph& graph) {
    std::string list;
    for (const auto& p : graph.phases) list += (list.empty() ? "" : ", ") + p.name + " " + std::to_string(p.epochs);
    return "this graph's phases set their own (" + list + ")";
  }

  // A command line's STAGE.PARAM, STAGE.OP.PARAM or STAGE.INDEX.PARAM,
  // in every phase (phase "") or in one (PHASE.STAGE...).
  struct StagePath {
    std::string phase;
    std::vector<std::string> path;  // the stage, then the parameter's path within it
    bool operator<(const StagePath& other) const { return std::tie(phase, path) < std::tie(other.phase, other.path); }
  };

  // The op of STAGE that `path` (["param"], ["op", "param"] or ["index",
  // "param"], as apply_override reads them) sets, with its index, in the
  // first phase (`phase` alone, when given) that has the stage; null and -1
  // when none. Twins share their ops' order: one index names the same op in each.
  static std::pair<const ResolvedOp*, int> op_of(const ResolvedGraph& graph, const std::string& phase,
                                                 const std::string& stage, const std::vector<std::string>& path) {
    const std::string& param = path.back();
    const bool by_index = path.size() == 2 && !path[0].empty() && path[0].size() <= 9 &&
                          std::all_of(path[0].begin(), path[0].end(), ::isdigit);
    for (const auto& p : graph.phases) {
      if (!phase.empty() && p.name != phase) continue;
      const ResolvedStage* s = p.find(stage);
      if (!s) continue;
      for (size_t i = 0; i < s->ops.size(); ++i) {
        const ResolvedOp& op = s->ops[i];
        if (!op.params.has(param)) continue;
        if (path.size() == 1 || (by_index ? std::stoul(path[0]) == i : op.type == path[0]))
          return {&op, static_cast<int>(i)};
      }
      return {nullptr, -1};
    }
    return {nullptr, -1};
  }
  static const Value* value_of(const ResolvedGraph& graph, const std::string& phase, const std::string& stage,
                               const std::vector<std::string>& path) {
    const ResolvedOp* op = op_of(graph, phase, stage, path).first;
    return op ? &op->params.value(path.back()) : nullptr;
  }

  // `--set STAGE.PARAM` changes that stage alone; its `like` and `copy`
  // twins (the stages made from it, and the one it was made from) keep the
  // graph's value. Branches that were the same are then silently unequal (a
  // side-by-side comparison compares unlike things): said once for each
  // twin the command line left alone, however the twin's setting is spelled.
  void warn_unchanged_copies(const std::vector<StagePath>& stage_paths, const ResolvedGraph& before,
                             ResolvedGraph& graph) {
    std::map<std::string, std::string> made_from;  // stage -> the stage it was made from
    for (const auto& stage : spec_.stages)
      if (!stage.copied_from.empty()) made_from[stage.name] = stage.copied_from;
    auto root_of = [&](std::string name) {
      for (auto it = made_from.find(name); it != made_from.end(); it = made_from.find(name)) name = it->second;
      return name;
    };
    auto descends_from = [&](std::string name, const std::string& ancestor) {
      for (auto it = made_from.find(name); it != made_from.end(); it = made_from.find(name))
        if ((name = it->second) == ancestor) return true;
      return false;
    };
    // What the command line set: (phase, stage, op index, parameter).
    using Key = std::tuple<std::string, std::string, int, std::string>;
    std::set<Key> set_keys;
    for (const auto& full : stage_paths) {
      const std::vector<std::string> path(full.path.begin() + 1, full.path.end());
      set_keys.insert({full.phase, full.path.front(), op_of(before, full.phase, full.path.front(), path).second, path.back()});
    }
    std::set<std::string> said;
    for (const auto& full : stage_paths) {
      const std::string& stage = full.path.front();
      const std::vector<std::string> path(full.path.begin() + 1, full.path.end());  // within the stage
      std::string rest;  // ".PARAM" or ".OP.PARAM", as the warning writes it
      for (const auto& part : path) rest += "." + part;
      const std::string prefix = full.phase.empty() ? "" : full.phase + ".";
      const Value* was = value_of(before, full.phase, stage, path);
      const Value* now = value_of(graph, full.phase, stage, path);
      if (!was || !now || *was == *now) continue;
      const int op = op_of(before, full.phase, stage, path).second;
      const std::string root = root_of(stage);
      std::vector<std::string> left;
      bool all_copies = true;  // every twin left alone was made from this stage
      for (const auto& twin : spec_.stages) {
        if (twin.name == stage || root_of(twin.name) != root) continue;
        // Set too, in every phase or in this one.
        if (set_keys.count({"", twin.name, op, path.back()}) || set_keys.count({full.phase, twin.name, op, path.back()}))
          continue;
        // A twin the graph gave its own value (a copy block's change) was meant to differ.
        const Value* twin_was = value_of(before, full.phase, twin.name, path);
        if (!twin_was || !(*twin_was == *was)) continue;
        left.push_back(twin.name);
        all_copies = all_copies && descends_from(twin.name, stage);
      }
      if (left.empty()) continue;
      std::string names;
      for (const auto& twin : left) names += (names.empty() ? "" : ", ") + prefix + twin + rest;
      const bool one = left.size() == 1;
      const std::string who = all_copies ? (one ? "its copy keeps" : "its copies keep") : (one ? "its twin keeps" : "its twins keep");
      std::string warning = "--set " + prefix + stage + rest + " changes '" + stage + "' alone: " + who +
                            " the graph's value (" + names + "); set " + (one ? "it" : "them") +
                            " too for branches that differ in nothing else";
      if (said.insert(warning).second) graph.warnings.push_back(warning);
    }
  }

  // Once the command line has had its say: every required parameter has a
  // value, and the schemas' cross-parameter rules hold (each problem reported
  // once, though a stage appears in every phase).
  void check_ops(ResolvedGraph& graph) {
    std::set<std::string> reported;
    auto report = [&](const Location& where, const std::string& message) {
      if (reported.insert(where_text(where) + message).second) error(where, message);
    };
    for (auto& phase : graph.phases)
      for (auto& stage : phase.stages)
        for (auto& op : stage.ops) {
          if (!op.params_valid) continue;
          const Schema& schema = op.stage_type->schema;
          const std::string owner = "stage '" + stage.name + "' (" + op.type + ")";
          bool complete = true;
          for (const auto& spec : schema.params())
            if (spec.required() && !op.params.has(spec.name)) {
              report(op.where, "missing required parameter '" + spec.name + "' (" + to_string(spec.type) + ") for " + owner);
              complete = false;
            }
          if (!complete) continue;
          for (const auto& rule : schema.checks())
            if (std::string problem = rule(op.params); !problem.empty()) report(blamed(op, rule), owner + ": " + problem);
        }
  }

  // The schemas' rules across stages (Schema::graph_check), each problem
  // once at the op's place, though a stage appears in every phase.
  void check_across_stages(const ResolvedGraph& graph) {
    std::set<std::string> reported;
    for (const auto& phase : graph.phases)
      for (const auto& stage : phase.stages)
        for (size_t i = 0; i < stage.ops.size(); ++i) {
          const ResolvedOp& op = stage.ops[i];
          if (!op.stage_type) continue;
          for (const auto& rule : op.stage_type->schema.graph_checks()) {
            const std::string problem = rule(graph, phase, stage, i);
            if (problem.empty()) continue;
            const std::string message = "stage '" + stage.name + "' (" + op.type + "): " + problem;
            if (reported.insert(where_text(op.where) + message).second) error(op.where, message);
          }
        }
  }

  // The override (latest first) without which `rule` holds: its value is
  // the problem; else the op's own place.
  Location blamed(const ResolvedOp& op, const Schema::Check& rule) const {
    auto it = overridden_.find(&op);
    if (it == overridden_.end()) return op.where;
    for (auto change = it->second.rbegin(); change != it->second.rend(); ++change) {
      if (!change->before) continue;
      Params without = op.params;
      without.set(change->param, *change->before);
      if (rule(without).empty()) return change->where;
    }
    return op.where;
  }

  // Where `param` of `op` was last set by a phase or the command line, else
  // the op's own place: a problem with the value is reported where it was written.
  Location where_of(const ResolvedOp& op, const std::string& param) const {
    auto it = overridden_.find(&op);
    if (it != overridden_.end())
      for (auto change = it->second.rbegin(); change != it->second.rend(); ++change)
        if (change->param == param) return change->where;
    return op.where;
  }

  // Stage references (StageRef parameters): `auto` becomes the phase's one
  // stage with the role (or none, when optional); a name given must be a
  // stage of the phase with that role. Each problem once, at the stage.
  void resolve_stage_refs(ResolvedGraph& graph) {
    std::set<std::string> reported;
    auto report = [&](const Location& where, const std::string& message) {
      if (reported.insert(where_text(where) + message).second) error(where, message);
    };
    for (auto& phase : graph.phases) {
      std::map<std::string, std::vector<std::string>> players;  // role -> stages that play it
      std::map<std::string, std::set<std::string>> roles_of;     // stage -> its roles
      for (const auto& stage : phase.stages)
        for (const auto& op : stage.ops)
          if (op.stage_type)
            for (const auto& role : op.stage_type->schema.roles()) {
              if (roles_of[stage.name].insert(role).second) players[role].push_back(stage.name);
            }
      const std::string in_phase = graph.implicit_phase ? "" : " in phase '" + phase.name + "'";
      for (auto& stage : phase.stages)
        for (auto& op : stage.ops) {
          if (!op.params_valid || !op.stage_type) continue;
          const std::string owner = "stage '" + stage.name + "' (" + op.type + ")";
          for (const auto& spec : op.stage_type->schema.params()) {
            if (spec.role.empty() || !op.params.has(spec.name)) continue;
            const std::vector<std::string>& candidates = players[spec.role];
            if (op.params.is_auto(spec.name)) {
              if (candidates.size() == 1) {
                op.params.set(spec.name, Value(candidates.front()));
              } else if (candidates.empty() && spec.role_optional) {
                op.params.set(spec.name, Value(std::string()));
              } else if (candidates.empty()) {
                std::vector<std::string> types;
                for (const auto& type : registry_.types())
                  for (const auto& role : registry_.find(type)->schema.roles())
                    if (role == spec.role) types.push_back(type);
                report(where_of(op, spec.name), owner + ": no " + spec.role + " stage for '" + spec.name + "'" + in_phase +
                                     "; declare one (" + spec.role + " types: " + join_names(types) + ")");
              } else {
                report(where_of(op, spec.name), owner + ": '" + spec.name + "' could be any of " + join_names(candidates) + in_phase +
                                     "; name one (" + spec.name + "=" + candidates.front() + ")");
              }
              continue;
            }
            const std::string& named = op.params.get_string(spec.name);
            if (named.empty() && spec.role_optional) continue;
            if (!roles_of.count(named) && !phase.find(named)) {
              report(where_of(op, spec.name), owner + ": " + spec.name + "='" + named + "' names no stage" + in_phase +
                                   did_you_mean(named, candidates) + (candidates.empty() ? std::string()
                                   : " (" + spec.role + " stages: " + join_names(candidates) + ")"));
            } else if (!roles_of[named].count(spec.role)) {
              report(where_of(op, spec.name), owner + ": " + spec.name + "='" + named + "': stage '" + named +
                                                  "' is no " + spec.role + in_phase +
                                                  (candidates.empty() ? std::string()
                                                   : " (" + spec.role + " stages: " + join_names(candidates) + ")"));
            } else if (const ResolvedStage* target = phase.find(named)) {
              // A piped stage plays the role only if each of its ops does.
              for (size_t i = 0; i < target->ops.size(); ++i) {
                const ResolvedOp& part = target->ops[i];
                if (!part.stage_type) continue;
                const auto& roles = part.stage_type->schema.roles();
                if (std::find(roles.begin(), roles.end(), spec.role) == roles.end())
                  report(part.where, "stage '" + named + "' op #" + std::to_string(i + 1) + " (" + part.type + ") is no " +
                                         spec.role + " op, but " + owner + " takes '" + named + "' as its " + spec.name +
                                         ": every op of a " + spec.role + " stage must be one");
              }
            }
          }
        }
    }
  }

  bool apply_setting(const Schema& schema, const ParamOverride& o, Params& params, const std::string& owner) {
    if (o.path.size() != 2) {
      error(o.path_where[0], "expected " + o.path[0] + ".SETTING=VALUE");
      return false;
    }
    const ParamSpec* spec = schema.find(o.path[1]);
    if (!spec) {
      error(o.path_where[1], "unknown setting '" + o.path[1] + "' for " + owner +
                                 did_you_mean(o.path[1], schema.param_names()) + " (settings: " +
                                 join_names(schema.param_names()) + ")");
      return false;
    }
    Value value;
    if (!convert(*spec, o.value, ".", value)) return false;
    params.set(spec->name, value);
    return true;
  }

  const GraphSpec& spec_;
  const Registry& registry_;
  Diagnostics& diagnostics_;
  std::string graph_dir_;
  struct Override {
    std::string param;
    Location where;                // of the value, in the graph's phase or on the command line
    std::optional<Value> before;   // the value it replaced (the default when none was given)
  };
  std::map<const ResolvedOp*, std::vector<Override>> overridden_;
  std::vector<ResolvedStage> top_;
  std::map<std::string, std::vector<std::string>> joined_;  // flow head -> sources joined to it
};

// A path as the resolved graph writes it: absolute, so that the text runs
// from wherever it is saved (RUN_DIR/graph.resolved) or whatever the working
// directory (paths were resolved against the graph file's folder, which a
// relative path would name from the working directory of this run).
std::string format_path(const std::string& path) {
  if (path.empty()) return format_value(Value(path));
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  return format_value(Value(ec ? path : absolute.lexically_normal().string()));
}

std::string format_op(const ResolvedOp& op) {
  std::string text = op.type;
  for (const auto& [name, value] : op.params.values()) {
    const ParamSpec* spec = op.stage_type ? op.stage_type->schema.find(name) : nullptr;
    const bool is_path = spec && spec->type == ValueType::Path && std::holds_alternative<std::string>(value);
    text += " " + name + "=" + (is_path ? format_path(std::get<std::string>(value)) : format_value(value));
  }
  return text;
}

std::string format_stage(const ResolvedStage& stage) {
  std::string text = stage.name + " = ";
  for (size_t i = 0; i < stage.ops.size(); ++i) {
    text += (i ? " | " : "") + format_op(stage.ops[i]);
    if (i == 0 && stage.kind == StageKind::Transform)
      text += " concurrency=" + (stage.concurrency ? std::to_string(stage.concurrency) : std::string("auto"));
  }
  return text;
}

}  // namespace

ResolvedGraph resolve_graph(const GraphSpec& spec, const Registry& registry,
                            const std::vector<CommandLineOverride>& overrides) {
  Diagnostics diagnostics;
  GraphSpec expanded = spec;
  expand_copies(expanded, diagnostics);
  Resolver resolver(expanded, registry, diagnostics);
  ResolvedGraph graph = resolver.resolve(overrides);
  if (!diagnostics.empty()) throw GraphError(std::move(diagnostics));
  return graph;
}

std::vector<std::string> ResolvedGraph::sources_of(const std::string& head) const {
  std::vector<std::string> sources = {head};
  if (auto it = joined.find(head); it != joined.end()) sources.insert(sources.end(), it->second.begin(), it->second.end());
  return sources;
}

std::string ResolvedGraph::format() const {
  std::ostringstream out;
  out << "# resolved from " << file << "\n";
  // epochs= only where it counts: a graph with phases gives each its own.
  out << "run seed=" << run.seed << " in_flight=" << run.in_flight
      << (implicit_phase ? " epochs=" + std::to_string(run.epochs) : std::string())
      << " threads=" << (run.threads ? std::to_string(run.threads) : std::string("auto"))
      << " compute_threads=" << (run.compute_threads ? std::to_string(run.compute_threads) : std::string("auto"))
      << " backend=" << run.backend << " timeout=" << format_value(Value(run.timeout_s)) << "\n";
  for (const auto& plugin : plugins) out << "plugin " << format_path(plugin) << "\n";
  const ResolvedPhase& first = phases.front();
  // Top level: the first phase's view of every stage declared outside phases.
  std::set<std::string> in_flow;
  for (const auto& chain : chains) in_flow.insert(chain.begin(), chain.end());
  for (const auto& entry : joined) in_flow.insert(entry.second.begin(), entry.second.end());
  std::vector<const ResolvedStage*> base;
  for (const auto& stage : first.stages)
    if (in_flow.count(stage.name) || implicit_phase) base.push_back(&stage);
  for (const auto* stage : base) out << format_stage(*stage) << "\n";
  for (const auto& chain : chains) {
    out << "flow";
    for (size_t i = 0; i < chain.size(); ++i) {
      out << (i ? " -> " : " ") << chain[i];
      if (i == 0)
        if (auto it = joined.find(chain[0]); it != joined.end())
          for (const auto& name : it->second) out << " + " << name;
    }
    out << "\n";
  }
  // Each phase spells out every stage that is not a flow stage, and redeclares
  // flow stages whose configuration differs from the top level.
  for (const auto& phase : phases) {
    if (implicit_phase) break;
    out << "phase " << phase.name << " epochs=" << phase.epochs << " {\n";
    for (const auto& stage : phase.stages) {
      const ResolvedStage* top = nullptr;
      for (const auto* b : base)
        if (b->name == stage.name) top = b;
      if (top && top->same_config(stage)) continue;
      out << "  " << format_stage(stage) << "\n";
    }
    out << "}\n";
  }
  return out.str();
}

}  // namespace flowrun
