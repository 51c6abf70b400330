// `normalize`: 8-bit RGB to float CHW, (x/255 - mean) / std per channel
// (ToTensor + Normalize), through a 256-entry table per channel.
#pragma once

#include <array>

#include "pipeline/stage.h"

namespace flowrun::stages {

class Normalize : public TransformStage {
 public:
  static Schema schema();
  explicit Normalize(const StageInit& init);
  void process(Item& item) override;

 private:
  std::array<float, 3> mean_{}, std_{};
  std::array<std::array<float, 256>, 3> table_{};
};

}  // namespace flowrun::stages
