// Learning-rate schedules: a component gives, for step t of T in a phase,
// the factor applied to every parameter group's peak learning rate (and,
// for one-cycle, the momentum). Stepped once per batch by the train stage.
#pragma once

#include <optional>

#include "pipeline/stage.h"

namespace flowrun::stages {

class ScheduleStage : public ComponentStage {
 public:
  // Learning rate at `step` of `total` as a fraction of the peak (1 = peak).
  virtual double lr_factor(int64_t step, int64_t total) const = 0;
  // Momentum (SGD) or beta1 (Adam) at `step`, when the schedule cycles it.
  virtual std::optional<double> momentum(int64_t step, int64_t total) const { return std::nullopt; }
};

ScheduleStage* find_schedule(const StageDirectory& stages, const std::string& name);  // "" -> nullptr

}  // namespace flowrun::stages
