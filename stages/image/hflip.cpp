#include "stages/image/hflip.h"

#include "pipeline/registry.h"
#include "stages/image/geometry.h"

namespace flowrun::stages {

Schema HFlip::schema() {
  return Schema("hflip", "mirrors the image left-right with probability p (RandomHorizontalFlip)")
      .randomized()
      .param(Float("p", "probability of a flip").def(0.5).range(0, 1));
}

void HFlip::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "hflip");
  if (rng_for(sample).chance(p_)) flip_horizontal(image);
}

FLOWRUN_REGISTER_STAGE(HFlip);

}  // namespace flowrun::stages
