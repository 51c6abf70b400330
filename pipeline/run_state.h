// Stopping a run and taking it up again (DALI's pipeline checkpointing,
// simpler). The engine knows where a run stands; each stage knows its own
// state as opaque bytes (Stage::save_state); a StateKeeper stage (the
// `checkpoint` stage) decides when to keep them and where. Randomness is a
// function of (seed, epoch, sample), so a position plus the stages' states
// is all a resumed run needs to produce the same numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace flowrun {

// Where a run stands: the next work is source item `items` of flow `flow`
// (in the order flows are written) of global epoch `epoch`.
struct RunPosition {
  int epoch = 0;
  int flow = 0;
  uint64_t items = 0;

  bool at_epoch_start() const { return flow == 0 && items == 0; }
  std::string describe() const;  // "epoch 3" or "epoch 3, flow 2, item 150"
};

// What a resumed run needs: the position and every stateful stage's bytes
// (by stage name; a fused stage's ops as NAME#i), plus the resolved graph
// that wrote them (to warn when a run resumes under another graph).
struct RunState {
  RunPosition position;
  std::map<std::string, std::string> stages;
  std::string graph;
};

// A count written into saved state ("150"): plain decimal digits, at most
// 2^62; nullopt for anything else (signs, spaces, overflow, empty).
std::optional<uint64_t> parse_saved_count(std::string_view text);

// Gathers the stages' states; only called when the keeper writes.
using StateCollector = std::function<RunState()>;

// A stage that keeps the run's state. At most one per graph.
class StateKeeper {
 public:
  virtual ~StateKeeper() = default;
  // Asked once, after the first phase's stages are built: the state to
  // resume from, if any.
  virtual std::optional<RunState> resume_state() = 0;
  // After every epoch's end_epoch calls; `next` is where the run goes on.
  virtual void epoch_ended(const RunPosition& next, const StateCollector& collect) = 0;
  // The run stops (completed, or interrupted at a batch boundary), before
  // the stages' on_stop. Not called when a stage failed: the last kept
  // state stays the last good one.
  virtual void run_stopped(const RunPosition& next, bool interrupted, const StateCollector& collect) = 0;
};

}  // namespace flowrun
