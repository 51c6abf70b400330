#include "stages/common/compute_threads.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "pipeline/worker_threads.h"

namespace flowrun::stages {
namespace {

// OpenMP's own per-thread setter, from the OpenMP runtime LibTorch loaded
// (found at run time: linking one here could bring a second runtime beside
// the one a pip LibTorch bundles). at::set_num_threads would also do it,
// but it rebuilds LibTorch's pthreadpool and sets the process-wide default
// at every call.
using SetNumThreads = void (*)(int);
SetNumThreads openmp_set_num_threads() {
  static const SetNumThreads set = reinterpret_cast<SetNumThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  return set;
}

// Every thread that joins a run's worker pool starts with one intra-op thread.
const bool kWorkersStartAtOne = [] {
  add_worker_thread_setup([] { set_intra_op_threads(1); });
  return true;
}();

}  // namespace

int set_intra_op_threads(int threads) {
  // at::get_num_threads() also makes LibTorch do its lazy per-thread
  // initialisation now, so that it cannot undo what follows later.
  if (at::get_num_threads() == threads) return threads;
  if (SetNumThreads set = openmp_set_num_threads()) set(threads);
  if (at::get_num_threads() != threads) at::set_num_threads(threads);  // a LibTorch that is not built on OpenMP
  return at::get_num_threads();
}

ComputeThreads::ComputeThreads(const StageInit& init)
    : stages_(init.stages), stage_(init.name), fixed_(init.run.compute_threads), threads_(init.run.threads) {}

void ComputeThreads::begin_epoch(bool on_cpu) {
  decide();
  // Scheduling alone follows the measured load: which worker threads run
  // the flow's data stages changes no number, the kernels' count would.
  const double others = stages_.busy_threads_besides(stage_);
  const bool takes_every_worker = on_cpu && chosen_ > 1 && chosen_ >= threads_;
  stages_.run_flow_on_one_thread(stage_, takes_every_worker && others < 0.5);
  // A data path that keeps a worker busy beside kernels on every worker
  // oversubscribes the cores: said once, with the setting that avoids it.
  const int leave = static_cast<int>(std::lround(others));
  if (fixed_ == 0 && takes_every_worker && leave >= 1 && !hinted_) {
    hinted_ = true;
    spdlog::info("{}: the rest of its flow kept {:.1f} worker threads busy beside its {} compute threads; "
                 "--set run.compute_threads={} may run faster (auto takes every worker thread, so that the "
                 "numbers do not depend on the measured load)",
                 stage_, others, chosen_, std::max(1, chosen_ - leave));
  }
}

void ComputeThreads::decide() {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (fixed_ > 0) {
    chosen_ = fixed_;
    if (fixed_ > cores && !hinted_) {
      hinted_ = true;  // more kernel threads than cores spin against each other
      spdlog::warn("{}: run.compute_threads={} on a machine of {} cores: its kernels' threads will wait on each other; "
                   "at most {} (or auto) runs faster", stage_, fixed_, cores, cores);
    }
    return;
  }
  // auto: every worker thread, at most the machine's cores. Never the
  // measured load: LibTorch's CPU results depend on how many threads
  // reduced them, so a count that followed timing would give two runs of
  // one command different numbers.
  chosen_ = std::clamp(threads_, 1, cores);
}

ComputeThreads::Scope::Scope(ComputeThreads& owner) { owner.seen_ = set_intra_op_threads(owner.chosen_); }

ComputeThreads::Scope::~Scope() { set_intra_op_threads(1); }

void ComputeThreads::report(Report& report) const {
  if (seen_) report.set("compute_threads", seen_);
}

}  // namespace flowrun::stages
