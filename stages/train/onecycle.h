// `onecycle`: PyTorch's OneCycleLR (two phases, cosine or linear annealing,
// momentum cycled inversely): the same learning-rate sequence for the same
// arguments. The peak is each parameter group's own learning rate.
#pragma once

#include "stages/train/schedule.h"

namespace flowrun::stages {

class OneCycle : public ScheduleStage {
 public:
  static Schema schema();
  explicit OneCycle(const StageInit& init);
  double lr_factor(int64_t step, int64_t total) const override;
  std::optional<double> momentum(int64_t step, int64_t total) const override;

 private:
  double anneal(double start, double end, double pct) const;
  double pct_start_, div_factor_, final_div_factor_;
  bool cosine_, cycle_momentum_;
  double base_momentum_, max_momentum_;
};

}  // namespace flowrun::stages
