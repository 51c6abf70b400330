// Runs a resolved graph on a oneTBB flow graph: phases, then epochs, each
// epoch pushing every source's items through its chain (flows one after
// another, in the order written). Per chain a
// limiter_node bounds the source items alive at once (run.in_flight), so
// memory never grows with the dataset; transforms run concurrently up to their
// `concurrency`, and a sequencer restores stream order before every serial
// stage, so results do not depend on thread timing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline/graph.h"
#include "pipeline/run_state.h"
#include "pipeline/stage.h"

namespace flowrun {

// A stage failed; what() reads "stage 'NAME' (TYPE): MESSAGE".
class StageError : public std::runtime_error {
 public:
  StageError(std::string stage, const std::string& message)
      : std::runtime_error(message), stage_(std::move(stage)) {}
  const std::string& stage() const { return stage_; }

 private:
  std::string stage_;
};

struct RunOptions {
  int threads = 1;
  std::string run_dir;       // given to stages through RunInfo
  std::string profile_path;  // Chrome trace output; empty = no tracing
  JobInfo job;               // this process's place in a job (rank, world size...); backend and timeout come from the graph
};

struct StageStats {
  std::string name;
  std::string type;           // "a | b" for fused stages
  StageKind kind = StageKind::Transform;
  int64_t concurrency = 1;
  uint64_t items_in = 0;      // items processed (not counting dropped ones passing by)
  uint64_t items_out = 0;
  uint64_t dropped = 0;       // items this stage dropped
  double busy_s = 0;          // time inside the stage's code, summed over threads
  double wait_input_s = 0;    // idle capacity: no item to work on
  double wait_output_s = 0;   // held back by the in-flight bound (sources; other stages hand on without blocking)
  double output_queue_ms = 0; // mean time an output waited for the next stage: downstream pressure
  double utilization = 0;     // busy / (time its flow ran x concurrency)
  double bound_s = 0;         // busy / the threads it can use: the least time its work keeps the run going
  std::map<std::string, double> figures;  // from Stage::report
};

struct RunResult {
  bool interrupted = false;
  double elapsed_s = 0;
  int epochs_run = 0;                       // global epochs complete at the end (resumed ones included)
  std::optional<RunPosition> resumed_from;  // where a resumed run took up
  RunPosition stopped_at;                   // where the run ended: a resumed run goes on from here
  // Why it ended: "completed", "interrupted", or what a stage that ended it
  // early said (early stopping: "early stopping: val_loss did not improve...").
  std::string stop_reason = "completed";
  std::vector<StageStats> stages;      // flow stages, chain order
  std::map<std::string, std::map<std::string, double>> component_figures;
  std::vector<int64_t> max_in_flight;  // per chain: most source items alive at once
  std::string bottleneck;              // the flow stage with the largest bound_s: it bounds the run's time
  size_t trace_events_dropped = 0;
  double peak_rss_mb = 0;              // the process's peak resident memory
};

// Runs every phase and epoch. Throws StageError when a stage fails (the run
// stops at once) and std::runtime_error for engine-level failures (a stalled
// flow). A stop request (signal) ends the run early with interrupted=true
// after the stages' on_stop(true).
RunResult run_graph(const ResolvedGraph& graph, const RunOptions& options);

// The end-of-run table (one line per stage, the bottleneck named).
std::string format_stage_table(const RunResult& result);

}  // namespace flowrun
