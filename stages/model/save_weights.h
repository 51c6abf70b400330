// `save_weights`: writes a model's weights as safetensors (torchvision's
// keys: `model.load_state_dict(...)` in Python takes them) when the run
// completes — atomically, so an interrupted or failed run leaves any earlier
// file intact.
#pragma once

#include "pipeline/stage.h"

namespace flowrun::stages {

class SaveWeights : public ComponentStage {
 public:
  static Schema schema();
  explicit SaveWeights(const StageInit& init);
  void on_stop(bool interrupted) override;
  void report(Report& report) const override { report.set("weights_saved", saved_ ? 1 : 0); }

 private:
  const StageDirectory& stages_;
  std::string model_, path_;
  bool writes_;  // rank 0 of a job writes
  bool saved_ = false;
};

}  // namespace flowrun::stages
