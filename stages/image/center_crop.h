// `center_crop`: torchvision's CenterCrop (pads with zeros when the image is
// smaller than the crop).
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class CenterCrop : public TransformStage, public SourceWindowOp {
 public:
  static Schema schema();
  explicit CenterCrop(const StageInit& init) : size_(SizeParams::read(init.params)) {}
  void process(Item& item) override;
  // The crop's part of the image; nothing when that is all of it.
  std::optional<Window> source_window(const Sample& sample, int width, int height) const override;

 private:
  // The crop (top, left, size) in a width x height image; may reach beyond it (padding).
  Window crop_of(int width, int height) const;
  SizeParams size_;
};

}  // namespace flowrun::stages
