// `inverse_decay`: the learning-rate annealing of domain-adversarial training,
// lr_p = lr · (1 + gamma · p)^(−power) over the phase's progress p in [0, 1]
// (Ganin & Lempitsky, ICML 2015, §5: gamma 10, power 0.75; Caffe's "inv"
// policy over progress instead of iterations; the Transfer-Learning-Library
// steps the same form per iteration).
#pragma once

#include "stages/train/schedule.h"

namespace flowrun::stages {

class InverseDecay : public ScheduleStage {
 public:
  static Schema schema();
  explicit InverseDecay(const StageInit& init)
      : gamma_(init.params.get_float("gamma")), power_(init.params.get_float("power")) {}
  // (1 + gamma · step/total)^(−power): 1 at the first step.
  double lr_factor(int64_t step, int64_t total) const override;

 private:
  double gamma_, power_;
};

}  // namespace flowrun::stages
