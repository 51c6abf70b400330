// Helpers shared by the engine tests.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/graph.h"

namespace flowrun::test {

// Parses and resolves graph text (as if read from `file`); throws GraphError.
ResolvedGraph resolve_text(const std::string& text, const std::vector<std::string>& sets = {},
                           const std::string& file = "test.graph");

// The formatted errors of graph text that must not validate ("" if it does).
std::string errors_of(const std::string& text, const std::vector<std::string>& sets = {},
                      const std::string& file = "test.graph");

// A fresh empty directory under the system temp dir.
std::string temp_dir();

// A file's bytes ("" when it cannot be read); its lines; one CSV line's
// fields (a trailing comma ends with an empty field).
std::string slurp(const std::string& path);
std::vector<std::string> lines_of(const std::string& path);
std::vector<std::string> split(const std::string& csv_line);
// Writes `text` to DIR/NAME and returns that path.
std::string write_graph(const std::string& dir, const std::string& name, const std::string& text);

// A stage error's message without the engine's note of where it happened
// (" (phase 'P', epoch E (e/n of the phase), item K the stage received this
// epoch)"), which it must end with; returns "no note of where: MESSAGE" if not.
std::string without_where(const std::string& message);

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the flowrun binary with `args`, capturing stdout and stderr.
CommandResult run_flowrun(const std::vector<std::string>& args, const std::string& cwd = "");
// Runs `graph` with cwd `dir`, 2 threads, run directory DIR/NAME and
// save.path=DIR/NAME.safetensors (the graph's save_weights stage is named
// `save`), then `extra` arguments.
CommandResult run_in(const std::string& dir, const std::string& graph, const std::string& name,
                     const std::vector<std::string>& extra = {});
// A run directory's summary.json, parsed (throws when it is missing or bad).
nlohmann::json summary_of(const std::string& run_dir);
// The same, sending `signal` to it as soon as `ready()` holds (polled every 10 ms).
CommandResult run_flowrun_signalled(const std::vector<std::string>& args, const std::function<bool()>& ready,
                                    int signal, const std::string& cwd = "");

}  // namespace flowrun::test
