// `texture_blend`: a synthetic domain shift in the manner of MNIST-M (Ganin
// & Lempitsky, ICML 2015, section 5: each MNIST digit blended over a patch
// of a colour photo, out = |patch - digit| per channel). With no photos
// offline, the patch is a colour texture drawn for the sample: a base colour
// plus three plane waves of random direction, frequency (0.5 to 4 cycles
// per image side), phase and per-channel amplitude, clipped to 0..255. Each
// sample's texture is a function of (`seed`, its dataset index) alone: not
// of the epoch or the run's seed, so the shifted images form one fixed
// dataset (a target domain), the same in every run and every epoch.
// Gray input becomes RGB; the output is always 3 channels. In a flow that
// joins sources (`flow source + target -> ...`), `source=NAME` blends only
// the items of that source (the target), leaving the others as they are.
#pragma once

#include <cstdint>
#include <string>

#include "pipeline/stage.h"

namespace flowrun::stages {

struct Image;

// Blends `image` (1 or 3 channels) with the texture of `key` in place.
void blend_with_texture(Image& image, uint64_t key);

class TextureBlend : public TransformStage {
 public:
  static Schema schema();
  explicit TextureBlend(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item) override;

 private:
  const StageDirectory& stages_;
  std::string name_, source_;
  uint64_t seed_;
  int64_t origin_ = -1;  // the items blended: those of this source of the flow; -1 = all
};

}  // namespace flowrun::stages
