// `count`: a source of the integers start, start+1, ... (count of them per
// epoch). The engine's smallest source, for demos, tests and benchmarks.
#pragma once

#include "pipeline/stage.h"

namespace flowrun::stages {

class Count : public SourceStage {
 public:
  static Schema schema();
  explicit Count(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override { next_ = 0; }
  bool next(Item& item) override;

 private:
  int64_t count_, start_, next_ = 0;
};

}  // namespace flowrun::stages
