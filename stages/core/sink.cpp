#include "stages/core/sink.h"

#include <chrono>
#include <thread>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Sink::schema() {
  return Schema("sink", "counts (and sums, for integers) the items that reach it; reports items, sum, ordered")
      .param(Int("us", "microseconds to wait per item (a slow consumer)").def(int64_t{0}).range(0, 60'000'000));
}

Sink::Sink(const StageInit& init) : name_(init.name), us_(init.params.get_int("us")) {}

void Sink::process(Item& item, const Emit& emit) {
  if (us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(us_));
  ++items_;
  if (item.holds<int64_t>()) {
    int64_t value = item.get<int64_t>();
    sum_ += value;
    // Items arrive in stream order whatever the upstream concurrency.
    if (value < last_) ordered_ = false;
    last_ = value;
  }
  emit(item);
}

void Sink::report(Report& report) const {
  report.set("items", static_cast<double>(items_));
  report.set("sum", static_cast<double>(sum_));
  report.set("ordered", ordered_ ? 1 : 0);
}

FLOWRUN_REGISTER_STAGE(Sink);

}  // namespace flowrun::stages
