// A validated graph: every stage has a registered type and typed parameters,
// the flow is a set of source-to-sink chains, and each phase knows the exact
// parameters of every stage for its epochs. Built by resolve_graph(), which
// reports every problem of the file (and of --set) at once.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pipeline/diagnostics.h"
#include "pipeline/graph_spec.h"
#include "pipeline/registry.h"

namespace flowrun {

struct RunSettings {
  uint64_t seed = 0;
  int64_t in_flight = 256;  // source items alive at once, per chain
  int64_t epochs = 1;       // used when the graph declares no phase
  int64_t threads = 0;      // 0 = not set in the graph (the CLI decides)
  int64_t compute_threads = 0;  // 0 = auto: what the rest of a model stage's flow leaves free
  std::string backend = "auto";  // a job's collectives: auto, gloo or nccl
  double timeout_s = 600;        // a job's rendezvous and collectives
};

struct ResolvedOp {
  std::string type;
  const StageType* stage_type = nullptr;
  Params params;
  Location where;             // of the op in the graph file
  bool params_valid = true;   // false when its parameters were already reported wrong
};

struct ResolvedStage {
  std::string name;
  StageKind kind = StageKind::Transform;
  std::vector<ResolvedOp> ops;  // more than one: fused transforms, run in order
  int64_t concurrency = 0;      // Transform only; 0 = auto (the run's thread count)
  Location where;
  bool same_config(const ResolvedStage& other) const;
};

struct ResolvedPhase {
  std::string name;
  int64_t epochs = 1;
  Location where;
  std::vector<ResolvedStage> stages;  // all stages, flow and components, in declaration order
  const ResolvedStage* find(const std::string& name) const;
};

struct ResolvedGraph {
  std::string file;
  RunSettings run;
  std::vector<std::string> plugins;
  std::vector<std::vector<std::string>> chains;  // stage names, source first
  // A flow that joins sources (`flow a + t -> ...`), keyed by its first
  // source (a): the sources whose items alternate with a's (t). a's items
  // define the epoch; each joined source starts over when it runs out.
  std::map<std::string, std::vector<std::string>> joined;
  // The sources of the flow starting at `head`: head, then any joined to it.
  std::vector<std::string> sources_of(const std::string& head) const;
  std::vector<ResolvedPhase> phases;             // at least one
  bool implicit_phase = false;                   // no phase declared: one 'main' phase of run.epochs
  // What resolving noticed that is not an error (the CLI says each as a warning).
  std::vector<std::string> warnings;
  // Renders the graph back in the graph language with every parameter
  // spelled out (what `--check` prints); it parses back to the same graph.
  std::string format() const;
};

// `--set` overrides, each text with its place on the command line.
struct CommandLineOverride {
  std::string text;
  std::string origin;  // e.g. "--set #2", used as the file in errors
};

// Validates `spec` against `registry`. Paths in the graph are resolved
// relative to the graph file's directory, paths given with --set relative to
// the working directory. Throws GraphError listing every problem found.
ResolvedGraph resolve_graph(const GraphSpec& spec, const Registry& registry,
                            const std::vector<CommandLineOverride>& overrides = {});

// The parameter schemas of the `run` line and of a phase header.
const Schema& run_schema();
const Schema& phase_schema();

}  // namespace flowrun
