// How many threads a model stage's tensor kernels use. LibTorch's CPU
// kernels parallelise with OpenMP, whose thread count is a per-thread
// setting that LibTorch initialises on its own (to the physical cores, or
// OMP_NUM_THREADS) the first time each thread uses it: a stage running on a
// oneTBB worker would otherwise get whatever that thread happened to have.
// So the model stages set it on the thread that runs them, at every batch,
// and every worker thread starts at 1 (registered with the engine's
// worker-thread set-up): data stages that call tensor ops never start
// OpenMP teams of their own.
#pragma once

#include <string>

#include "pipeline/stage.h"

namespace flowrun::stages {

// Sets the calling thread's intra-op thread count; returns what LibTorch
// reports for this thread afterwards (at::get_num_threads()).
int set_intra_op_threads(int threads);

// The policy of one model stage: run.compute_threads when given, else
// (auto) the run's worker threads, at most the machine's cores. Never the
// measured load: LibTorch's CPU results depend on the thread count, so the
// same command gives the same numbers. The load measured in the flow's last
// pass only decides scheduling (run_flow_on_one_thread) and a hint to set
// fewer when the data path keeps a worker busy. Decided once per epoch.
class ComputeThreads {
 public:
  explicit ComputeThreads(const StageInit& init);
  // Decides this epoch's count. When the stage's kernels run on the CPU
  // and take every worker thread, and the rest of its flow is light (under
  // half a thread busy), its flow runs on one worker thread this epoch
  // (StageDirectory::run_flow_on_one_thread): the data stages then work in
  // the gaps between batches, not beside the parallel kernels.
  void begin_epoch(bool on_cpu);
  int chosen() const { return chosen_; }

  // The calling thread runs tensor kernels on chosen() threads while a
  // Scope lives, then on 1 again (as every worker thread).
  class Scope {
   public:
    explicit Scope(ComputeThreads& owner);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };

  // `compute_threads`: what LibTorch reported inside the stage in its last
  // batch (the stage table's `thr` column shows it).
  void report(Report& report) const;

 private:
  void decide();

  const StageDirectory& stages_;
  std::string stage_;
  int fixed_;    // run.compute_threads, 0 = auto
  int threads_;  // the run's worker threads
  int chosen_ = 1;
  int seen_ = 0;  // read back from LibTorch in the last Scope
  bool hinted_ = false;  // the compute_threads hint is said once
};

}  // namespace flowrun::stages
