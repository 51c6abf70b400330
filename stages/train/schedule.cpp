#include "stages/train/schedule.h"

#include <stdexcept>

namespace flowrun::stages {

ScheduleStage* find_schedule(const StageDirectory& stages, const std::string& name) {
  return name.empty() ? nullptr : &stages.require<ScheduleStage>(name, "scheduler");
}

}  // namespace flowrun::stages
