// `like` stages and `copy` statements become plain declarations before
// validation, so everything after (types, parameters, flows, phases, --set,
// --check's output) sees an ordinary graph.
#include <functional>
#include <map>
#include <set>

#include "pipeline/graph_spec.h"

namespace flowrun {
namespace {

std::string joined(const std::vector<std::string>& parts) {
  std::string text;
  for (size_t i = 0; i < parts.size(); ++i) text += (i ? "." : "") + parts[i];
  return text;
}

// Applies one change ([param] or [op, param], both relative to `stage`) to a copied stage.
void apply_change(StageDecl& stage, const ParamOverride& change, size_t first, Diagnostics& diagnostics) {
  const size_t parts = change.path.size() - first;
  const Location& at = change.path_where[first];
  OpDecl* op = nullptr;
  if (parts == 1) {
    if (stage.ops.size() != 1) {
      diagnostics.error(at, "stage '" + stage.name + "' pipes " + std::to_string(stage.ops.size()) +
                                " ops: name the op of '" + change.path[first] + "' (e.g. '" + stage.ops[0].type + "." +
                                change.path[first] + "' or '0." + change.path[first] + "')");
      return;
    }
    op = &stage.ops[0];
  } else if (parts == 2) {
    const std::string& which = change.path[first];
    bool index = !which.empty() && which.find_first_not_of("0123456789") == std::string::npos;
    if (index && which.size() < 6 && std::stoul(which) < stage.ops.size()) op = &stage.ops[std::stoul(which)];
    for (auto& candidate : stage.ops)
      if (!index && candidate.type == which) {
        if (op) {
          diagnostics.error(at, "stage '" + stage.name + "' pipes '" + which + "' twice: name the op by its index");
          return;
        }
        op = &candidate;
      }
    if (!op) {
      std::string types;
      for (size_t i = 0; i < stage.ops.size(); ++i) types += (i ? ", " : "") + stage.ops[i].type;
      diagnostics.error(at, "stage '" + stage.name + "' has no op '" + which + "' (its ops: " + types + ")");
      return;
    }
  } else {
    diagnostics.error(at, "'" + joined(std::vector<std::string>(change.path.begin() + first, change.path.end())) +
                              "': expected 'param = value' or 'op.param = value'");
    return;
  }
  ParamAssign assign{change.path.back(), change.path_where.back(), change.value};
  for (auto& existing : op->params)
    if (existing.name == assign.name) {
      existing = assign;
      return;
    }
  op->params.push_back(std::move(assign));
}

}  // namespace

void expand_copies(GraphSpec& spec, Diagnostics& diagnostics) {
  // `like`: a stage takes the ops and parameters of the top-level stage it
  // names (which may itself be a copy), then its own changes.
  std::map<std::string, size_t> top;
  for (size_t i = 0; i < spec.stages.size(); ++i) top.emplace(spec.stages[i].name, i);
  std::set<std::string> in_progress;  // the stages whose bases are being expanded: a loop comes back to one
  std::function<bool(StageDecl&)> expand = [&](StageDecl& stage) -> bool {
    if (stage.like.empty()) return true;  // a plain stage, or one expanded already
    auto base_it = top.find(stage.like);
    if (base_it == top.end()) {
      diagnostics.error(stage.like_where, "stage '" + stage.name + "' is declared like '" + stage.like +
                                              "', but there is no top-level stage of that name");
      return false;
    }
    StageDecl& base = spec.stages[base_it->second];
    if (&base == &stage || !in_progress.insert(base.name).second) {
      diagnostics.error(stage.like_where, "stage '" + stage.name + "' is declared like '" + stage.like +
                                              "', which is (in turn) declared like it: a loop");
      return false;
    }
    bool ok = expand(base);
    in_progress.erase(base.name);
    if (!ok) return false;
    stage.ops = base.ops;
    for (const auto& change : stage.changes) apply_change(stage, change, 0, diagnostics);
    stage.copied_from = stage.like;
    stage.like.clear();
    return true;
  };
  for (auto& stage : spec.stages) {
    in_progress = {stage.name};
    expand(stage);
  }
  for (auto& phase : spec.phases)
    for (auto& stage : phase.stages) {
      in_progress.clear();
      expand(stage);
    }

  // `copy`: the flows starting at the named sources, stage by stage.
  if (spec.copies.empty()) return;
  std::map<std::string, std::string> next;
  std::map<std::string, std::vector<std::string>> joined;  // flow head -> sources joined to it
  for (const auto& flow : spec.flows) {
    for (size_t i = 1; i < flow.names.size(); ++i) next.emplace(flow.names[i - 1], flow.names[i]);
    if (!flow.names.empty())
      joined[flow.names.front()].insert(joined[flow.names.front()].end(), flow.joined.begin(), flow.joined.end());
  }
  std::set<std::string> names;
  for (const auto& stage : spec.stages) names.insert(stage.name);
  for (const auto& copy : spec.copies) {
    std::map<std::string, StageDecl> copies;  // by original name
    std::vector<FlowDecl> flows;
    // Stage `name` copied as PREFIX + name (once); returns the copy's name.
    auto copy_stage = [&](const std::string& name) {
      const std::string copied = copy.prefix + name;
      if (names.count(copied) || copies.count(name)) {
        diagnostics.error(copy.prefix_where, "copy: the copy of '" + name + "' would be named '" + copied +
                                                 "', which is taken");
      } else if (auto it = top.find(name); it != top.end()) {
        StageDecl stage = spec.stages[it->second];
        stage.name = copied;
        stage.copied_from = name;
        copies.emplace(name, std::move(stage));
      }
      return copied;
    };
    for (size_t s = 0; s < copy.sources.size(); ++s) {
      const std::string& source = copy.sources[s];
      if (spec.flows.empty() || !top.count(source)) {
        diagnostics.error(copy.sources_where[s], "copy: no flow starts at '" + source +
                                                     "' (copy names the first stage of a 'flow' line)");
        continue;
      }
      FlowDecl flow;
      // The sources joined to this one are copied with it.
      for (const std::string& name : joined[source]) {
        const std::string copied = copy_stage(name);
        flow.joined.push_back(copied);
        flow.joined_where.push_back(copy.sources_where[s]);
      }
      for (std::string name = source;; name = next.at(name)) {
        if (flow.names.size() > spec.stages.size()) break;  // a loop: the validation reports it
        const std::string copied = copy_stage(name);
        flow.names.push_back(copied);
        flow.where.push_back(copy.sources_where[s]);
        if (!next.count(name)) break;
      }
      if (flow.names.size() < 2) {
        diagnostics.error(copy.sources_where[s], "copy: no flow starts at '" + source + "'");
        continue;
      }
      flows.push_back(std::move(flow));
    }
    for (const auto& change : copy.changes) {
      auto it = copies.find(change.path[0]);
      if (it == copies.end()) {
        std::string copied;
        for (const auto& entry : copies) copied += (copied.empty() ? "" : ", ") + entry.first;
        diagnostics.error(change.path_where[0], "copy: '" + change.path[0] + "' is not a stage of the copied flows (" +
                                                    copied + ")");
        continue;
      }
      apply_change(it->second, change, 1, diagnostics);
    }
    // The copies, in the order of the flows they belong to.
    for (const auto& flow : flows) {
      std::vector<std::string> order = flow.joined;  // joined sources first, as a source comes before its flow
      order.insert(order.end(), flow.names.begin(), flow.names.end());
      for (const auto& name : order)
        for (auto& entry : copies)
          if (entry.second.name == name) {
            names.insert(name);
            spec.stages.push_back(entry.second);
          }
    }
    for (auto& flow : flows) spec.flows.push_back(std::move(flow));
  }
  spec.copies.clear();
}

}  // namespace flowrun
