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

// `STAGE.PARAM = VALUE` or, for a piped stage, `STAGE.OP.PARAM = VALUE`.
struct ParamOverride {
  std::vector<std::string> path;
  std::vector<Location> path_where;
  RawValue value;
};

// `NAME = OP | OP ...`: several transform ops run fused, one after another.
// `NAME = like BASE PARAM=VALUE OP.PARAM=VALUE ...`: a copy of stage BASE
// with some parameters changed (expanded before validation).
struct StageDecl {
  std::string name;
  Location where;
  std::vector<OpDecl> ops;
  std::string like;                     // the stage this one copies; "" = none
  Location like_where;
  std::string copied_from;              // after expansion: the stage a `like` or `copy` made this from
  std::vector<ParamOverride> changes;   // paths relative to the stage: [param] or [op, param]
};

// `copy SOURCE... as PREFIX { STAGE.PARAM = VALUE ... }`: the flows that
// start at the named sources again, every stage copied as PREFIX + its name,
// with the block's changes (STAGE names an original stage) applied to the
// copies (expanded before validation).
struct CopyDecl {
  Location where;
  std::vector<std::string> sources;
  std::vector<Location> sources_where;
  std::string prefix;
  Location prefix_where;
  std::vector<ParamOverride> changes;
};

// `phase NAME epochs=N { ... }`: a named run of epochs with its own settings.
struct PhaseDecl {
  std::string name;
  Location where;
  std::vector<ParamAssign> settings;
  std::vector<StageDecl> stages;          // stages (re)declared for this phase
  std::vector<ParamOverride> overrides;   // parameters changed for this phase
};

// `flow a -> b -> c`, or `flow a + t -> b -> c`: sources joined to the
// first (`joined`: t), their items alternating with a's in one stream.
struct FlowDecl {
  std::vector<std::string> names;
  std::vector<Location> where;
  std::vector<std::string> joined;
  std::vector<Location> joined_where;
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
  std::vector<CopyDecl> copies;
};

// Expands `like` stages and `copy` statements into plain stage and flow
// declarations, in place; problems go to `diagnostics` with their places.
// (resolve_graph does this first; --check prints the expanded graph.)
void expand_copies(GraphSpec& spec, Diagnostics& diagnostics);

// Parses graph text. Syntax errors go to `diagnostics` (all of them, with
// their places); the result holds whatever could be read.
GraphSpec parse_graph(const std::string& text, const std::string& file, Diagnostics& diagnostics);

// Reads and parses a file; an unreadable file is a diagnostic too.
GraphSpec parse_graph_file(const std::string& path, Diagnostics& diagnostics);

// Parses `STAGE.PARAM=VALUE` as given to --set (`origin` names it in errors).
bool parse_override(const std::string& text, const std::string& origin, ParamOverride& out,
                    Diagnostics& diagnostics);

}  // namespace flowrun
