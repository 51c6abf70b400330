// The stage contract (MediaPipe's calculator, simpler): a stage is built from
// its validated parameters, sees epochs begin and end, and does its work in
// one method whose shape depends on its kind. Exceptions thrown from any of
// them stop the run with the stage's name in the message.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <memory>
#include <string>
#include <typeindex>
#include <vector>

#include "pipeline/item.h"
#include "pipeline/schema.h"

namespace flowrun {

class Stage;

// This process's place in a data-parallel job of several processes (from
// torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or
// Slurm's, or `flowrun --nproc`); a process alone is rank 0 of 1. The engine
// only carries it: stages that work across processes (stages/dist/) use it.
struct JobInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // on this machine: the GPU a rank takes
  int local_world_size = 1;  // ranks on this machine: they share its cores
  std::string master_addr;   // where the ranks meet (rank 0's c10d store)
  int master_port = 0;
  std::string backend = "auto";  // run.backend: auto, gloo or nccl
  double timeout_s = 600;        // run.timeout: rendezvous and every collective
  bool distributed() const { return world_size > 1; }
  // Whether this process writes the run's files (the run directory,
  // weights, checkpoints, predictions, plots): rank 0 alone.
  bool writes_files() const { return rank == 0; }
};

// Facts about the whole run that stages may need.
struct RunInfo {
  uint64_t seed = 0;
  int threads = 1;            // --threads: what `auto` concurrency means
  int compute_threads = 0;    // run.compute_threads: a model stage's intra-op threads; 0 = auto
  std::string graph_dir;      // directory of the graph file (paths are already resolved)
  std::string run_dir;        // where stages may write their outputs ("" = nowhere)
  JobInfo job;
};

struct EpochInfo {
  std::string phase;          // name of the current phase
  int phase_index = 0;
  int epoch = 0;              // counts across phases, from 0
  int epoch_in_phase = 0;
  int epochs_in_phase = 1;
  uint64_t seed = 0;          // the run's seed; per-sample randomness = f(seed, epoch, index)
};

// Typed objects stages share (a model, an optimizer...), found by name.
class Services {
 public:
  template <class T>
  void provide(const std::string& key, std::shared_ptr<T> object) {
    entries_[key] = {std::type_index(typeid(T)), std::move(object)};
  }
  template <class T>
  std::shared_ptr<T> find(const std::string& key) const {
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.type != std::type_index(typeid(T))) return nullptr;
    return std::static_pointer_cast<T>(it->second.object);
  }

 private:
  struct Entry {
    std::type_index type = std::type_index(typeid(void));
    std::shared_ptr<void> object;
  };
  std::map<std::string, Entry> entries_;
};

// Named figures a stage adds to the run summary (`--summary-json`).
class Report {
 public:
  void set(const std::string& key, double value) { figures_[key] = value; }
  const std::map<std::string, double>& figures() const { return figures_; }

 private:
  std::map<std::string, double> figures_;
};

// The stages of the current phase by name, for stages that work with another
// named stage (a source asks its sampler for the epoch's order). Look up at
// begin_epoch, not in the constructor: a phase may rebuild a stage.
struct ResolvedGraph;

class StageDirectory {
 public:
  virtual ~StageDirectory() = default;
  // The graph being run (its flows, and every phase's stages and
  // parameters), for a stage whose choices depend on the stages around it;
  // null outside a run.
  virtual const ResolvedGraph* resolved_graph() const { return nullptr; }
  // The ops of stage `name` (one, or several for a piped stage); empty when
  // the current phase has no such stage.
  virtual std::vector<Stage*> find(const std::string& name) const = 0;
  // The stage `name` as a T; throws naming `what` when there is no such
  // stage in this phase or it is of another kind.
  template <class T>
  T& require(const std::string& name, const std::string& what) const {
    std::vector<Stage*> ops = find(name);
    T* stage = ops.empty() ? nullptr : dynamic_cast<T*>(ops.front());
    if (!stage) throw std::runtime_error("no " + what + " stage named '" + name + "' in this phase");
    return *stage;
  }
  // How many worker threads the other stages of `stage`'s flow kept busy,
  // on average over that flow's last complete pass (0 before there was
  // one): what a stage that brings threads of its own (a model's tensor
  // kernels) can take without oversubscribing the machine.
  virtual double busy_threads_besides(const std::string& stage) const { return 0; }
  // Runs `stage`'s flow on one worker thread from its next pass on (false:
  // on all of them again): for a stage whose own kernels take every core (a
  // model on the CPU). The flow's other stages then run in the gaps between
  // its batches: beside its parallel kernels they would slow each parallel
  // step to the pace of its slowest thread, and the stage would hop between
  // worker threads, each with a team of kernel threads of its own.
  virtual void run_flow_on_one_thread(const std::string& stage, bool one) const {}
};

// Everything a stage is built from.
struct StageInit {
  const std::string& name;    // the stage's name in the graph
  const Params& params;       // validated: every schema parameter has a value
  const RunInfo& run;
  Services& services;
  const StageDirectory& stages;
};

class Stage {
 public:
  virtual ~Stage() = default;
  // A phase changed this stage's parameters. Return false to have the engine
  // build a fresh instance instead (the default: fine for stateless stages).
  virtual bool update_params(const Params& params) { return false; }
  virtual void begin_epoch(const EpochInfo& epoch) {}
  virtual void end_epoch(const EpochInfo& epoch) {}
  // The run is ending (interrupted says why): the last chance to save state.
  virtual void on_stop(bool interrupted) {}
  // State that must survive a stop and resume (weights, optimizer moments,
  // running sums): write it to `out` and return true. Stages whose work is a
  // function of (seed, epoch, item) keep none. Called between items.
  virtual bool save_state(std::string& out) const { return false; }
  // Restores what save_state wrote. On resume the engine calls it after
  // begin_epoch of the epoch the run resumes in. Throw on bytes it cannot read.
  virtual void load_state(const std::string& in) {}
  // Figures for the summary JSON, asked for at the end of the run.
  virtual void report(Report& report) const {}
};

// Produces an epoch's items, one call each, on one thread. Return false when
// the epoch has no more items.
class SourceStage : public Stage {
 public:
  virtual bool next(Item& item) = 0;
  // Passes over the epoch's next `count` items (a run resuming mid-epoch);
  // returns how many there were. Override when producing an item is costly.
  virtual uint64_t skip(uint64_t count) {
    uint64_t skipped = 0;
    for (Item item; skipped < count && next(item); item = Item()) ++skipped;
    return skipped;
  }
};

// Works on one item in place; may run on several threads at once, so it must
// not touch shared mutable state. item.drop() removes it from the stream.
class TransformStage : public Stage {
 public:
  virtual void process(Item& item) = 0;
};

// Sees items on one thread in stream order and emits zero or more items
// (a batcher, a trainer, a sink). flush() runs at the end of each epoch.
class SerialStage : public Stage {
 public:
  using Emit = std::function<void(Item)>;
  virtual void process(Item& item, const Emit& emit) = 0;
  virtual void flush(const Emit& emit) {}
};

// Not in the flow: a service that other stages look up.
class ComponentStage : public Stage {};

}  // namespace flowrun
