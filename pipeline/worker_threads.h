// Per-thread set-up for the threads that run stages. A library that keeps
// settings per thread (LibTorch's intra-op thread count is OpenMP's, which
// is per thread) registers what each worker must start with; the executor
// makes sure it has run on a thread before that thread runs a stage.
#pragma once

#include <functional>

namespace flowrun {

void add_worker_thread_setup(std::function<void()> setup);

// Runs every registered set-up on the calling thread.
void run_worker_thread_setup();

// Runs them on the calling thread unless it already ran the current list
// (one thread-local comparison on the usual path). Not a TBB
// task_scheduler_observer: oneTBB leaks an observer's proxy when a worker
// still points at it as the arena goes away.
void ensure_worker_thread_setup();

}  // namespace flowrun
