#include "stage_listing.h"

#include "pipeline/diagnostics.h"
#include "pipeline/graph.h"

#include <cstdio>
#include <sstream>

namespace flowrun {

namespace {
std::string describe_param(const ParamSpec& spec) {
  std::string text = spec.doc;
  std::vector<std::string> notes;
  if (spec.min && spec.max) notes.push_back(spec.format_bound(*spec.min) + " .. " + spec.format_bound(*spec.max));
  else if (spec.min) notes.push_back(">= " + spec.format_bound(*spec.min));
  else if (spec.max) notes.push_back("<= " + spec.format_bound(*spec.max));
  if (!spec.choices.empty()) notes.push_back("one of " + join_names(spec.choices, 100));
  if (spec.allow_auto) notes.push_back("or auto");
  if (!notes.empty()) {
    text += " [";
    for (size_t i = 0; i < notes.size(); ++i) text += (i ? "; " : "") + notes[i];
    text += "]";
  }
  return text;
}


void list_params(std::ostringstream& out, const std::vector<ParamSpec>& params) {
  char line[512];
  for (const auto& spec : params) {
    std::string shown_default = spec.required() ? "(required)" : "= " + format_value(*spec.default_value);
    std::snprintf(line, sizeof line, "    %-18s %-12s %-16s %s\n", spec.name.c_str(), to_string(spec.type),
                  shown_default.c_str(), describe_param(spec).c_str());
    out << line;
  }
}
}  // namespace

std::string format_stage_listing(const Registry& registry, const std::string& only) {
  std::ostringstream out;
  // The settings of the run line and of phase headers first: they are not stages, but they are set the same way.
  for (const Schema* schema : {&run_schema(), &phase_schema()}) {
    if (!only.empty() && only != schema->type()) continue;
    out << schema->type() << " (" << (schema == &run_schema() ? "the run line" : "a phase header") << ")\n    "
        << schema->doc() << "\n";
    list_params(out, schema->params());
  }
  for (const auto& name : registry.types()) {
    if (!only.empty() && only != name) continue;
    const StageType& type = *registry.find(name);
    out << name << " (" << to_string(type.schema.kind()) << ", " << type.origin << ")\n    " << type.schema.doc() << "\n";
    std::vector<ParamSpec> params = type.schema.params();
    for (const auto& extra : engine_params(type.schema.kind())) params.push_back(extra);
    list_params(out, params);
  }
  return out.str();
}

}  // namespace flowrun
