// The parsed graph file, before validation: what was written and where.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/diagnostics.h"

namespace flowrun {

// A value as written: a number, a quoted string, a bare word (true, auto,
// reflect...) or a bracketed list.
struct RawValue {
  enum class Kind { Int, Float, String, Word, List };
  Kind kind = Kind::Word;
  Location where;
  std::string text;   // the characters as written (the string's contents for String)
  int64_t int_value = 0;
  double float_value = 0;
  std::vector<RawValue> items;  // List
};

struct ParamAssign {
  std::string name;
  Location where;
  RawValue value;
};

// One operation of a stage: `random_crop size=160 padding=4`.
struct OpDecl {
  std::string type;
  Location where;
  std::vector<ParamAssign> params;
};

// `NAME = OP | OP ...`: several transform ops run fused, one after another.
struct StageDecl {
  std::string name;
  Location where;
  std::vector<OpDecl> ops;
};

// `STAGE.PARAM = VALUE` or, for a piped stage, `STAGE.OP.PARAM = VALUE`.
struct ParamOverride {
  std::vector<std::string> path;
  std::vector<Location> path_where;
  RawValue value;
};

// `phase NAME epochs=N { ... }`: a named run of epochs with its own settings.
struct PhaseDecl {
  std::string name;
  Location where;
  std::vector<ParamAssign> settings;
  std::vector<StageDecl> stages;          // stages (re)declared for this phase
  std::vector<ParamOverride> overrides;   // parameters changed for this phase
};

// `flow a -> b -> c`
struct FlowDecl {
  std::vector<std::string> names;
  std::vector<Location> where;
};

struct PluginDecl {
  std::string path;  // resolved relative to the graph file
  Location where;
};

struct GraphSpec {
  std::string file;
  std::vector<PluginDecl> plugins;
  std::vector<ParamAssign> run_settings;  // `run seed=0 in_flight=256 ...`
  std::vector<StageDecl> stages;
  std::vector<FlowDecl> flows;
  std::vector<PhaseDecl> phases;
};

// Parses graph text. Syntax errors go to `diagnostics` (all of them, with
// their places); the result holds whatever could be read.
GraphSpec parse_graph(const std::string& text, const std::string& file, Diagnostics& diagnostics);

// Reads and parses a file; an unreadable file is a diagnostic too.
GraphSpec parse_graph_file(const std::string& path, Diagnostics& diagnostics);

// Parses `STAGE.PARAM=VALUE` as given to --set (`origin` names it in errors).
bool parse_override(const std::string& text, const std::string& origin, ParamOverride& out,
                    Diagnostics& diagnostics);

}  // namespace flowrun
