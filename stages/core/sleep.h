// `sleep`: passes items through after waiting `us` microseconds (or spinning,
// to model CPU work). Models a slow stage in demos and tests; `drop_every`
// drops every Nth item to exercise dropped-item handling.
#pragma once

#include "pipeline/stage.h"

namespace flowrun::stages {

class Sleep : public TransformStage {
 public:
  static Schema schema();
  explicit Sleep(const StageInit& init);
  void process(Item& item) override;

 private:
  int64_t us_;
  bool spin_;
  int64_t drop_every_;
};

}  // namespace flowrun::stages
