#include "stages/core/count.h"

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Count::schema() {
  return Schema("count", "emits the integers start .. start+count-1 (int64) each epoch")
      .param(Int("count", "items per epoch").def(int64_t{1000}).at_least(0))
      .param(Int("start", "first value").def(int64_t{0}));
}

Count::Count(const StageInit& init) : count_(init.params.get_int("count")), start_(init.params.get_int("start")) {}

bool Count::next(Item& item) {
  if (next_ >= count_) return false;
  item.set<int64_t>(start_ + next_++);
  return true;
}

FLOWRUN_REGISTER_STAGE(Count);

}  // namespace flowrun::stages
