#include "stages/image/random_crop.h"

#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema RandomCrop::schema() {
  Schema schema("random_crop", "a window of the given size at a random place, after optional padding (RandomCrop)");
  schema.randomized();
  SizeParams::declare(schema, "crop size");
  return schema.param(Int("padding", "pixels added on every side first").def(int64_t{0}).range(0, 1 << 12))
      .param(String("mode", "padding mode").def(std::string("constant")).one_of({"constant", "edge", "reflect", "symmetric"}))
      .param(Int("fill", "padding value for mode=constant").def(int64_t{0}).range(0, 255))
      .param(Bool("pad_if_needed", "pad images smaller than the crop instead of failing").def(false));
}

RandomCrop::RandomCrop(const StageInit& init)
    : RandomImageOp(init, "random_crop"),
      size_(SizeParams::read(init.params)),
      padding_(static_cast<int>(init.params.get_int("padding"))),
      mode_(parse_pad_mode(init.params.get_string("mode"))),
      fill_(static_cast<uint8_t>(init.params.get_int("fill"))),
      pad_if_needed_(init.params.get_bool("pad_if_needed")) {}

void RandomCrop::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "random_crop");
  int pad_y = padding_, pad_x = padding_;
  if (pad_if_needed_) {
    pad_y += std::max(0, size_.height - (image.height + 2 * padding_));
    pad_x += std::max(0, size_.width - (image.width + 2 * padding_));
  }
  int padded_h = image.height + 2 * pad_y, padded_w = image.width + 2 * pad_x;
  if (padded_h < size_.height || padded_w < size_.width)
    throw std::runtime_error("random_crop: " + sample.describe() + " is " + std::to_string(image.width) + "x" +
                             std::to_string(image.height) + ", smaller than the crop " + std::to_string(size_.width) +
                             "x" + std::to_string(size_.height) + " (set pad_if_needed=true or resize first)");
  Rng rng = rng_for(sample);
  int top = static_cast<int>(rng.below(padded_h - size_.height + 1));
  int left = static_cast<int>(rng.below(padded_w - size_.width + 1));
  image = padded_crop(image, pad_y, pad_x, mode_, fill_, top, left, size_.height, size_.width);
}

FLOWRUN_REGISTER_STAGE(RandomCrop);

}  // namespace flowrun::stages
