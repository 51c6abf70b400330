// `random_resized_crop`: torchvision's RandomResizedCrop — a random window of
// random area (scale) and aspect ratio (ratio), resized to the output size.
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class RandomResizedCrop : public RandomImageOp, public SourceWindowOp {
 public:
  static Schema schema();
  explicit RandomResizedCrop(const StageInit& init);
  void process(Item& item) override;
  std::optional<Window> source_window(const Sample& sample, int width, int height) const override;

 private:
  // torchvision's get_params: the window of a width x height image for `sample`.
  Window get_params(const Sample& sample, int width, int height) const;
  SizeParams size_;
  double scale_lo_, scale_hi_, ratio_lo_, ratio_hi_;
};

}  // namespace flowrun::stages
