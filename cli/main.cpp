// flowrun: runs, checks and lists data-flow graphs. See README.md.
// Exit codes: 0 success, 1 the run failed, 2 bad command line or graph,
// 130 interrupted (SIGINT/SIGTERM).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>
#include <thread>

#include "pipeline/atomic_file.h"
#include "pipeline/executor.h"
#include "pipeline/graph.h"
#include "pipeline/interrupt.h"
#include "pipeline/plugin_loader.h"
#include "pipeline/summary.h"
#include "stage_listing.h"

namespace po = boost::program_options;
using namespace flowrun;

namespace {

constexpr int kExitOk = 0, kExitRunFailed = 1, kExitUsage = 2, kExitInterrupted = 130;

struct Options {
  std::string graph;
  std::vector<std::string> sets, plugins;
  bool check = false, list_stages = false;
  int threads = 0;
  int64_t seed = -1;
  std::string log_level = "warn", profile, summary_json, run_dir;
};

int usage_error(const std::string& message) {
  std::cerr << "flowrun: error: " << message << "\n(run 'flowrun --help' for usage)\n";
  return kExitUsage;
}

po::options_description describe_options(Options& o) {
  po::options_description visible("Usage: flowrun [OPTIONS] GRAPH\n\nOptions");
  visible.add_options()
      ("help,h", "show this help")
      ("check", po::bool_switch(&o.check), "validate the graph and print it resolved; run nothing")
      ("list-stages", po::bool_switch(&o.list_stages), "list every registered stage with its parameters")
      ("set", po::value(&o.sets)->composing(), "STAGE.PARAM=VALUE: override a parameter (repeatable); also "
                                               "STAGE.OP.PARAM, PHASE.STAGE.PARAM, PHASE.epochs, run.SETTING")
      ("plugin", po::value(&o.plugins)->composing(), "load a stage plugin .so (repeatable)")
      ("threads", po::value(&o.threads), "worker threads (default: the graph's run.threads, else all cores)")
      ("seed", po::value(&o.seed), "seed of every random choice (overrides run.seed)")
      ("log-level", po::value(&o.log_level)->default_value("warn"), "trace, debug, info, warn, error or off")
      ("profile", po::value(&o.profile), "write a Chrome trace-event JSON of stage activity to FILE")
      ("summary-json", po::value(&o.summary_json), "write the run's final figures as JSON to FILE")
      ("run-dir", po::value(&o.run_dir), "write the resolved graph, per-epoch metrics (CSV, JSON Lines, plots) and "
                                        "the summary into DIR");
  return visible;
}

}  // namespace

int main(int argc, char** argv) {
  // Stages allocate and free buffers of hundreds of KB per item. glibc would
  // serve each from a fresh mmap (page faults on every touch); keep them in
  // the heap instead. Peak memory is still bounded by run.in_flight.
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  Options o;
  po::options_description visible = describe_options(o);
  po::options_description all;
  all.add(visible).add_options()("graph", po::value(&o.graph));
  po::positional_options_description positional;
  positional.add("graph", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage_error(e.what());
  }
  if (vm.count("help")) {
    std::cout << visible << "\nExit codes: 0 success, 1 run failed, 2 invalid command line or graph, 130 interrupted.\n";
    return kExitOk;
  }

  auto level = spdlog::level::from_str(o.log_level);
  if (level == spdlog::level::off && o.log_level != "off")
    return usage_error("--log-level must be trace, debug, info, warn, error or off (got '" + o.log_level + "')");
  spdlog::set_default_logger(spdlog::stderr_color_mt("flowrun"));
  spdlog::set_level(level);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");

  if (vm.count("threads") && (o.threads < 1 || o.threads > 1024)) return usage_error("--threads must be 1..1024");
  if (vm.count("seed") && o.seed < 0) return usage_error("--seed must be a non-negative integer");
  if (o.graph.empty() && !o.list_stages) return usage_error("no graph file given");

  Registry& registry = Registry::global();
  Diagnostics diagnostics;
  for (const auto& plugin : o.plugins) {
    try {
      load_plugin(plugin, registry);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      return kExitUsage;
    }
  }

  GraphSpec spec;
  if (!o.graph.empty()) {
    spec = parse_graph_file(o.graph, diagnostics);
    for (const auto& plugin : spec.plugins) {
      try {
        load_plugin(plugin.path, registry);
      } catch (const PluginError& e) {
        diagnostics.error(plugin.where, "plugin " + e.path() + " " + e.reason());
      }
    }
  }
  if (!diagnostics.empty()) {
    std::cerr << diagnostics.format();
    return kExitUsage;
  }
  if (o.list_stages) {
    std::cout << format_stage_listing(registry);
    if (o.graph.empty()) return kExitOk;
  }

  std::vector<CommandLineOverride> overrides;
  for (size_t i = 0; i < o.sets.size(); ++i) overrides.push_back({o.sets[i], "--set #" + std::to_string(i + 1)});
  if (vm.count("seed")) overrides.push_back({"run.seed=" + std::to_string(o.seed), "--seed"});
  ResolvedGraph graph;
  try {
    graph = resolve_graph(spec, registry, overrides);
  } catch (const GraphError& e) {
    std::cerr << e.what();
    return kExitUsage;
  }
  if (o.check) {
    std::cout << graph.format();
    return kExitOk;
  }
  if (o.list_stages) return kExitOk;

  RunOptions options;
  options.threads = vm.count("threads") ? o.threads
                    : graph.run.threads ? static_cast<int>(graph.run.threads)
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.profile_path = o.profile;
  options.run_dir = o.run_dir;
  if (!o.run_dir.empty()) {
    try {
      write_file_atomically(o.run_dir + "/graph.resolved", graph.format());
    } catch (const std::exception& e) {
      std::cerr << "flowrun: error: " << e.what() << "\n";
      return kExitRunFailed;
    }
  }
  install_stop_signal_handlers();
  spdlog::info("running {} with {} threads, seed {}", o.graph, options.threads, graph.run.seed);
  RunResult result;
  try {
    result = run_graph(graph, options);
  } catch (const std::exception& e) {
    std::cerr << "flowrun: error: " << e.what() << "\n";
    return kExitRunFailed;
  }
  std::cerr << format_stage_table(result);
  std::vector<std::string> summaries;
  if (!o.summary_json.empty()) summaries.push_back(o.summary_json);
  if (!o.run_dir.empty()) summaries.push_back(o.run_dir + "/summary.json");
  for (const auto& path : summaries) {
    try {
      write_file_atomically(path, summary_json(result).dump(2) + "\n");
    } catch (const std::exception& e) {
      std::cerr << "flowrun: error: " << e.what() << "\n";
      return kExitRunFailed;
    }
  }
  if (result.interrupted) {
    std::cerr << "flowrun: interrupted at " << result.stopped_at.describe() << " (" << result.epochs_run
              << " complete epoch(s))\n";
    return kExitInterrupted;
  }
  return kExitOk;
}
