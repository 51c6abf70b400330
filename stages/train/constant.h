// `constant`: the peak learning rate throughout.
#pragma once

#include "stages/train/schedule.h"

namespace flowrun::stages {

class Constant : public ScheduleStage {
 public:
  static Schema schema();
  explicit Constant(const StageInit&) {}
  double lr_factor(int64_t, int64_t) const override { return 1.0; }
};

}  // namespace flowrun::stages
