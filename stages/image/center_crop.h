// `center_crop`: torchvision's CenterCrop (pads with zeros when the image is
// smaller than the crop).
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class CenterCrop : public TransformStage {
 public:
  static Schema schema();
  explicit CenterCrop(const StageInit& init) : size_(SizeParams::read(init.params)) {}
  void process(Item& item) override;

 private:
  SizeParams size_;
};

}  // namespace flowrun::stages
