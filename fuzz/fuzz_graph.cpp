// Fuzz target: the graph language. Any text parses to a graph or to
// diagnostics (FILE:LINE:COL errors), and resolving against the built-in
// stages' schemas validates or reports; nothing crashes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "pipeline/diagnostics.h"
#include "pipeline/graph.h"
#include "pipeline/registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  flowrun::Diagnostics diagnostics;
  flowrun::GraphSpec spec = flowrun::parse_graph(text, "fuzz.graph", diagnostics);
  if (!diagnostics.empty()) {
    (void)diagnostics.format();
    return 0;
  }
  try {
    flowrun::ResolvedGraph graph = flowrun::resolve_graph(spec, flowrun::Registry::global());
    (void)graph.format();
  } catch (const flowrun::GraphError& e) {
    (void)e.what();
  }
  return 0;
}
