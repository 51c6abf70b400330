// `color_jitter`: torchvision's ColorJitter without hue — brightness,
// contrast and saturation factors drawn per sample from [1-x, 1+x], applied
// in a random order.
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class ColorJitter : public RandomImageOp {
 public:
  static Schema schema();
  explicit ColorJitter(const StageInit& init);
  void process(Item& item) override;

 private:
  double brightness_, contrast_, saturation_;
};

}  // namespace flowrun::stages
