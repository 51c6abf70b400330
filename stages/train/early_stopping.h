// `early_stopping`: ends a training run when a monitored figure has not
// improved by more than min_delta for `patience` epochs in a row, as
// Lightning's EarlyStopping(monitor, mode, patience, min_delta) and fastai's
// EarlyStoppingCallback. The run then counts as complete (exit 0, files
// written); the summary's stop_reason says why it ended and when the best
// epoch was. Epoch e's figure is read once every stage has ended epoch e.
#pragma once

#include <string>

#include "pipeline/stage.h"
#include "stages/train/monitor.h"

namespace flowrun::stages {

class EarlyStopping : public ComponentStage {
 public:
  static Schema schema();
  explicit EarlyStopping(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void end_epoch(const EpochInfo& epoch) override;
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;
  void report(Report& report) const override;

 private:
  const StageDirectory& stages_;
  Monitor monitor_;
  int64_t patience_;
  int64_t waited_ = 0;      // epochs since the last improvement
  int pending_epoch_ = 0;   // 1-based epoch whose figure is yet to be read
  int stopped_after_ = 0;   // the epoch after which it ended the run; 0 = it did not
};

}  // namespace flowrun::stages
