// `best_weights`: keeps the model of the best epoch by a monitored figure,
// as Lightning's ModelCheckpoint(monitor=..., mode=..., save_top_k=1) and
// fastai's SaveModelCallback do. After every epoch whose figure improves on
// the best so far by more than min_delta, it writes the model's weights
// (safetensors, torchvision's keys, atomically) with the epoch, the figure's
// name and its value in the file's metadata (`best_epoch`, `monitor`,
// `best_value`). In a job rank 0 writes (the ranks' figures are the job's).
#pragma once

#include <string>

#include "pipeline/stage.h"
#include "stages/train/monitor.h"

namespace flowrun::stages {

class BestWeights : public ComponentStage {
 public:
  static Schema schema();
  explicit BestWeights(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void end_epoch(const EpochInfo& epoch) override;
  void on_stop(bool interrupted) override;
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;
  void report(Report& report) const override;

 private:
  void look();  // the epoch that ended: its figure, and the weights when it is the best

  const StageDirectory& stages_;
  std::string model_name_, path_;
  Monitor monitor_;
  bool writes_;
  int pending_epoch_ = 0;  // 1-based epoch whose figure is yet to be read; 0 = none
  int written_ = 0;
};

}  // namespace flowrun::stages
