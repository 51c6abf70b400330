// flowrun: runs, checks and lists data-flow graphs. See README.md.
// Exit codes: 0 success, 1 the run failed, 2 bad command line or graph,
// 130 interrupted (SIGINT/SIGTERM).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>

#include "pipeline/atomic_file.h"
#include "pipeline/executor.h"
#include "pipeline/graph.h"
#include "pipeline/interrupt.h"
#include "pipeline/plugin_loader.h"
#include "pipeline/summary.h"
#include "job_launch.h"
#include "range_test.h"
#include "stage_listing.h"
#include "version.h"
#include "stages/dist/job.h"
#include "stages/train/precompute_plan.h"

namespace po = boost::program_options;
using namespace flowrun;

namespace {

constexpr int kExitOk = 0, kExitRunFailed = 1, kExitUsage = 2, kExitInterrupted = 130;

struct Options {
  std::string graph;
  std::vector<std::string> sets, plugins;
  bool check = false, list_stages = false;
  int threads = 0;
  int nproc = 1;
  int64_t lr_find = 0;
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
      ("version", "print flowrun's version, the LibTorch it was built with, whether CUDA is compiled in (with "
                  "CUDA's, cuDNN's and NCCL's versions), the CUDA devices it sees, and the CPU's vector "
                  "extensions with what the pixel kernels and precision=auto use of them")
      ("check", po::bool_switch(&o.check), "validate the graph and print it resolved; run nothing")
      ("list-stages", po::bool_switch(&o.list_stages), "list every registered stage with its parameters; "
                                                       "--list-stages NAME: that stage alone")
      ("set", po::value(&o.sets)->composing(), "STAGE.PARAM=VALUE: override a parameter (repeatable); also "
                                               "STAGE.OP.PARAM, PHASE.STAGE.PARAM, PHASE.epochs, run.SETTING")
      ("plugin", po::value(&o.plugins)->composing(), "load a stage plugin .so (repeatable)")
      ("threads", po::value(&o.threads), "worker threads (default: the graph's run.threads, else all cores)")
      ("nproc", po::value(&o.nproc), "N: run as a job of N processes on this machine (data-parallel training; "
                                     "as torchrun --standalone). Under torchrun, srun or a script that sets RANK, "
                                     "WORLD_SIZE, MASTER_ADDR and MASTER_PORT, each process is one rank")
      ("seed", po::value(&o.seed), "seed of every random choice (overrides run.seed)")
      ("log-level", po::value(&o.log_level)->default_value("warn"), "trace, debug, info, warn, error or off")
      ("lr-find", po::value(&o.lr_find)->implicit_value(100),
       "[=N] the learning-rate range test on the training flow (N batches, default 100, from 1e-7 to 10): writes "
       "lr_find.csv and lr_find.png into the run directory (default ./lr_find), prints the suggested rates, "
       "puts the weights back")
      ("profile", po::value(&o.profile), "write a Chrome trace-event JSON of stage activity to FILE")
      ("summary-json", po::value(&o.summary_json), "write the run's final figures as JSON to FILE")
      ("run-dir", po::value(&o.run_dir), "write the resolved graph, per-epoch metrics (CSV, JSON Lines, plots) and "
                                        "the summary into DIR");
  return visible;
}

std::string format_figure(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4f", value);
  return text;
}

// A training run stopped without a checkpoint stage keeps nothing of what it
// trained (save_weights writes only when a run completes): say what was
// lost and how to keep it next time. "" when there is a checkpoint or no training.
std::string unkept_training_hint(const ResolvedGraph& graph, const RunResult& result) {
  bool trains = false;
  for (const auto& phase : graph.phases)
    for (const auto& stage : phase.stages)
      for (const auto& op : stage.ops) {
        if (op.type == "checkpoint") return "";
        trains = trains || op.type == "train";
      }
  if (!trains) return "";
  return "flowrun: the graph has no checkpoint stage: the weights and optimizer state of these " +
         std::to_string(result.epochs_run) + " epoch(s) and of the one under way are lost (save_weights writes only "
         "when a run completes). To keep a stopped run and go on with it later, add\n"
         "  checkpoint = checkpoint path=\"FILE.ckpt\" every=1\n"
         "to the graph (or run with --run-dir DIR and `checkpoint = checkpoint`); it is written when the run stops, "
         "Ctrl-C included, and --set checkpoint.resume=FILE.ckpt takes the run up again.\n";
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
  if (vm.count("version")) {
    std::cout << cli::version_text();
    return kExitOk;
  }

  if (o.nproc < 1 || o.nproc > 1024) return usage_error("--nproc must be 1..1024");
  JobInfo job;
  try {
    job = job_from_environment();
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("this process's place in a job: ") + e.what());
  }
  if (o.nproc > 1 && job.distributed())
    return usage_error("--nproc starts the ranks itself; this process is already rank " + std::to_string(job.rank) +
                       " of a job of " + std::to_string(job.world_size) + " (RANK and WORLD_SIZE are set)");

  auto level = spdlog::level::from_str(o.log_level);
  if (level == spdlog::level::off && o.log_level != "off")
    return usage_error("--log-level must be trace, debug, info, warn, error or off (got '" + o.log_level + "')");
  spdlog::set_default_logger(spdlog::stderr_color_mt("flowrun"));
  spdlog::set_level(level);
  // The ranks of a job say which they are in every log line.
  spdlog::set_pattern(job.distributed() ? "[%H:%M:%S.%e] [rank " + std::to_string(job.rank) + "] [%^%l%$] %v"
                                        : std::string("[%H:%M:%S.%e] [%^%l%$] %v"));

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

  // `--list-stages NAME`: one stage type (NAME is no graph file).
  std::string listed_stage;
  if (o.list_stages && !o.graph.empty() && !std::filesystem::exists(o.graph)) {
    listed_stage = o.graph;
    o.graph.clear();
    std::vector<std::string> known = registry.types();
    known.push_back("run");
    known.push_back("phase");
    if (std::find(known.begin(), known.end(), listed_stage) == known.end()) {
      std::cerr << "flowrun: error: --list-stages " << listed_stage << ": no stage type or graph file named '"
                << listed_stage << "'" << did_you_mean(listed_stage, known) << "\n";
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
    std::cout << format_stage_listing(registry, listed_stage);
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
  for (const auto& warning : graph.warnings) spdlog::warn("{}", warning);
  if (vm.count("lr-find")) {
    if (o.lr_find < 2 || o.lr_find > 100000) return usage_error("--lr-find takes 2..100000 batches");
    try {
      graph = range_test_graph(graph, o.lr_find);
    } catch (const std::invalid_argument& e) {
      return usage_error(e.what());
    }
    if (o.run_dir.empty()) o.run_dir = "lr_find";
  }
  if (o.check) {
    std::cout << graph.format() << stages::precompute_notes(graph);
    return kExitOk;
  }
  if (o.list_stages) return kExitOk;

  if (o.nproc > 1) {
    // The graph is valid: start the ranks, each this command without --nproc.
    std::vector<std::string> args;
    for (int i = 0; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--nproc") {
        ++i;
        continue;
      }
      if (arg.rfind("--nproc=", 0) == 0) continue;
      args.push_back(arg);
    }
    try {
      return run_local_ranks(o.nproc, args, graph.run.timeout_s + 10);
    } catch (const std::exception& e) {
      std::cerr << "flowrun: error: " << e.what() << "\n";
      return kExitRunFailed;
    }
  }

  RunOptions options;
  // By default a process takes every core; the ranks of a job on one
  // machine share them out.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  options.threads = vm.count("threads") ? o.threads
                    : graph.run.threads ? static_cast<int>(graph.run.threads)
                                        : std::max(1, cores / std::max(1, job.local_world_size));
  options.profile_path = o.profile;
  options.run_dir = o.run_dir;
  options.job = job;
  if (!o.run_dir.empty() && job.writes_files()) {
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
    stages::Job::report_failure(e.what());  // where the other ranks of a job look
    return kExitRunFailed;
  }
  stages::Job::leave();
  const std::string rank_suffix = job.distributed() ? ".rank" + std::to_string(job.rank) : "";
  // Every rank's own table, in one write (the ranks of a job share stderr).
  std::cerr << (job.distributed() ? "rank " + std::to_string(job.rank) + " of " + std::to_string(job.world_size) + ":\n"
                                  : std::string()) + format_stage_table(result) << std::flush;
  // Rank 0 writes the run directory and the summary; the other ranks of a
  // job their own summaries beside it (SUMMARY.rankN), with their counters.
  std::vector<std::string> summaries;
  if (!o.summary_json.empty()) summaries.push_back(job.rank ? o.summary_json + rank_suffix : o.summary_json);
  if (!o.run_dir.empty() && job.writes_files()) summaries.push_back(o.run_dir + "/summary.json");
  nlohmann::json summary = summary_json(result);
  summary["rank"] = job.rank;
  summary["world_size"] = job.world_size;
  for (const auto& path : summaries) {
    try {
      write_file_atomically(path, summary.dump(2) + "\n");
    } catch (const std::exception& e) {
      std::cerr << "flowrun: error: " << e.what() << "\n";
      return kExitRunFailed;
    }
  }
  if (job.writes_files()) {
    // Results on stdout: the final figures, and where files went (said once,
    // whatever the log level).
    std::string figures;
    for (const auto& [key, value] : summary.items()) {
      auto ends_with = [&](const std::string& tail) {
        return key.size() > tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0;
      };
      if (value.is_number() && (ends_with("_loss") || ends_with("_top1") || ends_with("_top5")))
        figures += " " + key + " " + format_figure(value.get<double>());
    }
    if (!figures.empty()) std::cout << "final:" << figures << "\n";
    const std::vector<std::string> written = files_written();
    if (!written.empty()) {
      std::cout << "wrote:";
      for (const auto& path : written) std::cout << " " << path;
      std::cout << "\n";
    }
    std::cout << std::flush;
  }
  if (result.interrupted) {
    std::cerr << "flowrun: interrupted at " << result.stopped_at.describe() << " (" << result.epochs_run
              << " complete epoch(s))\n";
    if (job.writes_files()) std::cerr << unkept_training_hint(graph, result);
    return kExitInterrupted;
  }
  return kExitOk;
}
