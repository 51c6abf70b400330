// `resize`: torchvision's Resize on PIL images (bilinear, antialiased, equal
// pixel for pixel): size=N sets the shorter side keeping the aspect ratio;
// height= and width= set both.
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class Resize : public TransformStage {
 public:
  static Schema schema();
  explicit Resize(const StageInit& init);
  void process(Item& item) override;

 private:
  int shorter_side_ = 0;
  SizeParams exact_;
};

}  // namespace flowrun::stages
