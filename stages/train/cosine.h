// `cosine`: linear warm-up over `warmup` of the steps, then cosine decay to
// `final` x peak.
#pragma once

#include "stages/train/schedule.h"

namespace flowrun::stages {

class Cosine : public ScheduleStage {
 public:
  static Schema schema();
  explicit Cosine(const StageInit& init)
      : warmup_(init.params.get_float("warmup")), final_(init.params.get_float("final")) {}
  double lr_factor(int64_t step, int64_t total) const override;

 private:
  double warmup_, final_;
};

}  // namespace flowrun::stages
