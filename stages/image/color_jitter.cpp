#include "stages/image/color_jitter.h"

#include <algorithm>
#include <cmath>

#include "pipeline/registry.h"
#include "stages/image/pixel_kernels.h"

namespace flowrun::stages {

namespace {

inline uint8_t to_byte(float v) { return static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)); }

// out = other * (1 - factor) + image * factor, PIL's Image.blend. The
// result of a byte is a function of the byte alone in brightness and
// contrast: a 256-entry table per call, the same float expression per entry.
void apply_table(Image& image, const uint8_t (&table)[256]) {
  for (auto& v : image.pixels) v = table[v];
}

void adjust_brightness(Image& image, float factor) {
  uint8_t table[256];
  for (int v = 0; v < 256; ++v) table[v] = to_byte(v * factor);
  apply_table(image, table);
}

void adjust_contrast(Image& image, float factor) {
  // The mean of PIL's rounded luma ("L" mode, ITU-R 601-2), an exact integer sum.
  size_t n = static_cast<size_t>(image.width) * image.height;
  const double sum = static_cast<double>(kernels::luma_sum(image.pixels.data(), n));
  float mean = static_cast<float>(std::floor(sum / static_cast<double>(n) + 0.5));
  uint8_t table[256];
  for (int v = 0; v < 256; ++v) table[v] = to_byte(mean * (1 - factor) + v * factor);
  apply_table(image, table);
}

void adjust_saturation(Image& image, float factor) {
  kernels::blend_with_gray(image.pixels.data(), static_cast<size_t>(image.width) * image.height, factor);
}

}  // namespace

Schema ColorJitter::schema() {
  return Schema("color_jitter", "random brightness, contrast and saturation in a random order (ColorJitter, no hue)")
      .randomized()
      .param(Float("brightness", "factor drawn from [max(0, 1-b), 1+b]").def(0.0).range(0, 100))
      .param(Float("contrast", "factor drawn from [max(0, 1-c), 1+c]").def(0.0).range(0, 100))
      .param(Float("saturation", "factor drawn from [max(0, 1-s), 1+s]").def(0.0).range(0, 100));
}

ColorJitter::ColorJitter(const StageInit& init)
    : RandomImageOp(init, "color_jitter"),
      brightness_(init.params.get_float("brightness")),
      contrast_(init.params.get_float("contrast")),
      saturation_(init.params.get_float("saturation")) {}

void ColorJitter::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "color_jitter");
  if (image.channels != 3) throw std::runtime_error("color_jitter: " + sample.describe() + " is not RGB");
  Rng rng = rng_for(sample);
  int order[3] = {0, 1, 2};
  for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  const double amounts[3] = {brightness_, contrast_, saturation_};
  for (int op : order) {
    double amount = amounts[op];
    if (amount <= 0) continue;
    float factor = static_cast<float>(rng.uniform(std::max(0.0, 1 - amount), 1 + amount));
    if (op == 0) adjust_brightness(image, factor);
    else if (op == 1) adjust_contrast(image, factor);
    else adjust_saturation(image, factor);
  }
}

FLOWRUN_REGISTER_STAGE(ColorJitter);

}  // namespace flowrun::stages
