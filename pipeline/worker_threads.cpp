#include "pipeline/worker_threads.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace flowrun {
namespace {
std::mutex& setups_mutex() {
  static std::mutex mutex;
  return mutex;
}
std::vector<std::function<void()>>& setups() {
  static std::vector<std::function<void()>> list;
  return list;
}
std::atomic<uint64_t> setups_version{1};  // bumped by every registration
thread_local uint64_t thread_setup_version = 0;
}  // namespace

void add_worker_thread_setup(std::function<void()> setup) {
  std::lock_guard<std::mutex> lock(setups_mutex());
  setups().push_back(std::move(setup));
  setups_version.fetch_add(1);
}

void run_worker_thread_setup() {
  std::vector<std::function<void()>> list;
  {
    std::lock_guard<std::mutex> lock(setups_mutex());
    list = setups();
  }
  for (const auto& setup : list) setup();
}

void ensure_worker_thread_setup() {
  uint64_t version = setups_version.load(std::memory_order_acquire);
  if (thread_setup_version == version) return;
  run_worker_thread_setup();
  thread_setup_version = version;
}

}  // namespace flowrun
