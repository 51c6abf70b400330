#include "stages/core/sleep.h"

#include <chrono>
#include <thread>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Sleep::schema() {
  return Schema("sleep", "passes items on after waiting us microseconds (sleeping, or spinning if spin=true)")
      .param(Int("us", "microseconds per item").def(int64_t{0}).range(0, 60'000'000))
      .param(Bool("spin", "burn CPU instead of sleeping").def(false))
      .param(Int("drop_every", "drop items whose value is a multiple of N (0: none)").def(int64_t{0}).at_least(0));
}

Sleep::Sleep(const StageInit& init)
    : us_(init.params.get_int("us")), spin_(init.params.get_bool("spin")), drop_every_(init.params.get_int("drop_every")) {}

void Sleep::process(Item& item) {
  if (us_ > 0) {
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us_);
    if (spin_) {
      while (std::chrono::steady_clock::now() < until) {
      }
    } else {
      std::this_thread::sleep_until(until);
    }
  }
  if (drop_every_ > 0 && item.holds<int64_t>() && item.get<int64_t>() % drop_every_ == 0) item.drop();
}

FLOWRUN_REGISTER_STAGE(Sleep);

}  // namespace flowrun::stages
