// `random_crop`: torchvision's RandomCrop — optional padding (constant, edge,
// reflect, symmetric), then a window at a random place.
#pragma once

#include "stages/image/geometry.h"
#include "stages/image/random_op.h"

namespace flowrun::stages {

class RandomCrop : public RandomImageOp {
 public:
  static Schema schema();
  explicit RandomCrop(const StageInit& init);
  void process(Item& item) override;

 private:
  SizeParams size_;
  int padding_;
  PadMode mode_;
  uint8_t fill_;
  bool pad_if_needed_;
};

}  // namespace flowrun::stages
