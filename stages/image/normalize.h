// `normalize`: 8-bit RGB to float CHW, (x/255 - mean) / std per channel
// (ToTensor + Normalize), through a 256-entry table per channel. By default
// (in_batch=true) the conversion itself happens in the batch stage, straight
// into the batch tensor; in_batch=false fills sample.tensor here, for stages
// that want the float image.
#pragma once

#include <array>
#include <memory>

#include "pipeline/stage.h"
#include "stages/data/sample.h"

namespace flowrun::stages {

class Normalize : public TransformStage {
 public:
  static Schema schema();
  explicit Normalize(const StageInit& init);
  void process(Item& item) override;

 private:
  std::shared_ptr<Normalization> normalization_;
  bool in_batch_;
};

}  // namespace flowrun::stages
