#include "stages/train/schedule.h"

#include <stdexcept>

namespace flowrun::stages {

ScheduleStage* find_schedule(const StageDirectory& stages, const std::string& name) {
  if (name.empty()) return nullptr;
  std::vector<Stage*> ops = stages.find(name);
  auto* schedule = ops.empty() ? nullptr : dynamic_cast<ScheduleStage*>(ops.front());
  if (!schedule) throw std::runtime_error("no scheduler stage named '" + name + "' in this phase");
  return schedule;
}

}  // namespace flowrun::stages
