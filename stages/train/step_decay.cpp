#include "stages/train/step_decay.h"

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema StepDecay::schema() {
  return Schema("step", "learning rate times gamma every N batches (StepLR)")
      .provides("scheduler")
      .param(Int("every", "batches between decays").def(int64_t{1000}).at_least(1))
      .param(Float("gamma", "decay factor").def(0.1).range(0, 1));
}

FLOWRUN_REGISTER_STAGE(StepDecay);

}  // namespace flowrun::stages
