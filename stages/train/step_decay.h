// `step`: the learning rate times `gamma` every `every` steps (StepLR,
// stepped per batch).
#pragma once

#include <cmath>

#include "stages/train/schedule.h"

namespace flowrun::stages {

class StepDecay : public ScheduleStage {
 public:
  static Schema schema();
  explicit StepDecay(const StageInit& init)
      : every_(init.params.get_int("every")), gamma_(init.params.get_float("gamma")) {}
  double lr_factor(int64_t step, int64_t total) const override {
    return std::pow(gamma_, static_cast<double>(step / every_));
  }

 private:
  int64_t every_;
  double gamma_;
};

}  // namespace flowrun::stages
