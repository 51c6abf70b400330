#include "stages/image/texture_blend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "stages/common/random.h"
#include "stages/data/sample.h"
#include "stages/image/random_op.h"

namespace flowrun::stages {

namespace {
// A uniform double in [0, 1) from a hash of (key, n): the texture is a pure
// function of the sample, not a draw from the run's random streams.
double unit(uint64_t key, uint64_t n) { return static_cast<double>(mix64(key ^ mix64(n)) >> 11) * 0x1.0p-53; }
}  // namespace

void blend_with_texture(Image& image, uint64_t key) {
  constexpr double kTwoPi = 6.283185307179586;
  struct Wave {
    double fx, fy, phase, amplitude[3];
  } waves[3];
  double base[3];
  uint64_t n = 0;
  for (double& b : base) b = 255 * unit(key, n++);
  for (Wave& w : waves) {
    const double angle = kTwoPi * unit(key, n++), cycles = 0.5 + 3.5 * unit(key, n++);
    w.fx = std::cos(angle) * cycles / image.width;
    w.fy = std::sin(angle) * cycles / image.height;
    w.phase = kTwoPi * unit(key, n++);
    for (double& a : w.amplitude) a = 60 * (2 * unit(key, n++) - 1);
  }
  Image out(image.width, image.height, 3);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* in = image.row(y);
    uint8_t* to = out.row(y);
    for (int x = 0; x < image.width; ++x) {
      double shade[3] = {base[0], base[1], base[2]};
      for (const Wave& w : waves) {
        const double s = std::sin(kTwoPi * (w.fx * x + w.fy * y) + w.phase);
        for (int c = 0; c < 3; ++c) shade[c] += w.amplitude[c] * s;
      }
      for (int c = 0; c < 3; ++c) {
        const double texture = std::clamp(shade[c], 0.0, 255.0);
        const double alpha = in[static_cast<size_t>(x) * image.channels + (image.channels == 1 ? 0 : c)] / 255.0;
        // The image's ink takes the texture's inverse, its background the texture.
        to[static_cast<size_t>(x) * 3 + c] =
            static_cast<uint8_t>(std::lround(alpha * (255 - texture) + (1 - alpha) * texture));
      }
    }
  }
  image = std::move(out);
}

Schema TextureBlend::schema() {
  return Schema("texture_blend", "blends each image with a colour texture, |texture - image| as MNIST-M (Ganin & "
                                 "Lempitsky 2015); each sample's texture from (seed, index): a fixed shifted dataset")
      .param(Int("seed", "which textures (not the run's seed: the shifted dataset stays the same)")
                 .def(int64_t{0}).range(0, int64_t{1} << 62))
      .param(String("source", "in a flow joining sources, blend only this source's items (\"\" = every item)")
                 .def(std::string("")));
}

TextureBlend::TextureBlend(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      source_(init.params.get_string("source")),
      seed_(static_cast<uint64_t>(init.params.get_int("seed"))) {}

void TextureBlend::begin_epoch(const EpochInfo&) {
  origin_ = -1;
  if (source_.empty()) return;
  const ResolvedGraph* graph = stages_.resolved_graph();
  std::vector<std::string> sources;
  if (graph)
    for (const auto& chain : graph->chains)
      if (std::find(chain.begin(), chain.end(), name_) != chain.end()) sources = graph->sources_of(chain.front());
  const auto it = std::find(sources.begin(), sources.end(), source_);
  if (it == sources.end()) {
    std::string names;
    for (const auto& s : sources) names += (names.empty() ? "" : ", ") + s;
    throw std::runtime_error("source='" + source_ + "' is not a source of this stage's flow (" + names + ")");
  }
  origin_ = it - sources.begin();
}

void TextureBlend::process(Item& item) {
  if (origin_ >= 0 && item.origin != static_cast<uint32_t>(origin_)) return;  // another source's item
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "texture_blend");
  if (image.channels != 1 && image.channels != 3)
    throw std::runtime_error("texture_blend: " + sample.describe() + " has " + std::to_string(image.channels) +
                             " channels; it takes gray or RGB");
  blend_with_texture(image, mix64(seed_ ^ mix64(static_cast<uint64_t>(sample.index) + 0x9e3779b97f4a7c15ULL)));
}

FLOWRUN_REGISTER_STAGE(TextureBlend);

}  // namespace flowrun::stages
