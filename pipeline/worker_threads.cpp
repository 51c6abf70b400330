#include "pipeline/worker_threads.h"

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
}  // namespace

void add_worker_thread_setup(std::function<void()> setup) {
  std::lock_guard<std::mutex> lock(setups_mutex());
  setups().push_back(std::move(setup));
}

void run_worker_thread_setup() {
  std::vector<std::function<void()>> list;
  {
    std::lock_guard<std::mutex> lock(setups_mutex());
    list = setups();
  }
  for (const auto& setup : list) setup();
}

}  // namespace flowrun
