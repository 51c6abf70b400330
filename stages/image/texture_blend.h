// `texture_blend`: a synthetic domain shift in the manner of MNIST-M (Ganin
// & Lempitsky, ICML 2015, section 5: each MNIST digit blended over a patch
// of a colour photo, out = |patch - digit| per channel). For a gray image
// (Fashion-MNIST's shaded garments, not binary strokes) the blend is linear
// in the pixel: out = a (255 - t) + (1 - a) t with a = pixel / 255, which
// equals |t - pixel| where the pixel is 0 or 255 and keeps a garment's
// shading in order where |t - pixel| would fold it. With no photos
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
