// Per-thread set-up for the threads that run stages. A library that keeps
// settings per thread (LibTorch's intra-op thread count is OpenMP's, which
// is per thread) registers what each worker must start with; the executor
// runs it on every thread as it joins the run's worker pool.
#pragma once

#include <functional>

namespace flowrun {

void add_worker_thread_setup(std::function<void()> setup);

// Runs every registered set-up on the calling thread.
void run_worker_thread_setup();

}  // namespace flowrun
