// `sink`: the end of a flow. Counts the items it receives (and sums them when
// they are integers), optionally slowly; reports `items` and `sum`.
#pragma once

#include "pipeline/stage.h"

namespace flowrun::stages {

class Sink : public SerialStage {
 public:
  static Schema schema();
  explicit Sink(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override { last_ = -1; }
  void process(Item& item, const Emit& emit) override;
  void report(Report& report) const override;

 private:
  std::string name_;
  int64_t us_;
  int64_t items_ = 0;
  int64_t sum_ = 0;
  int64_t last_ = -1;  // last value seen this epoch
  bool ordered_ = true;
};

}  // namespace flowrun::stages
