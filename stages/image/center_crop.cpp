#include "stages/image/center_crop.h"

#include <algorithm>

#include "pipeline/registry.h"
#include "stages/image/geometry.h"

namespace flowrun::stages {

Schema CenterCrop::schema() {
  Schema schema("center_crop", "the centred window of the given size (CenterCrop)");
  SizeParams::declare(schema, "crop size");
  return schema;
}

Window CenterCrop::crop_of(int width, int height) const {
  // A crop larger than the image: torchvision pads (larger - smaller) // 2 before it.
  auto offset = [](int outer, int inner) { return inner > outer ? -((inner - outer) / 2) : center_offset(outer, inner); };
  return Window{offset(height, size_.height), offset(width, size_.width), size_.height, size_.width};
}

std::optional<Window> CenterCrop::source_window(const Sample&, int width, int height) const {
  const Window crop = crop_of(width, height);
  if (crop.top <= 0 && crop.left <= 0 && crop.top + crop.height >= height && crop.left + crop.width >= width)
    return std::nullopt;
  const int top = std::max(crop.top, 0), left = std::max(crop.left, 0);
  return Window{top, left, std::min(crop.top + crop.height, height) - top, std::min(crop.left + crop.width, width) - left};
}

void CenterCrop::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_source_pixels(sample, "center_crop");
  const int width = full_width(image), height = full_height(image);
  if (width == size_.width && height == size_.height && !image.is_window()) return;
  // Outside the full image padded_crop fills zeros, as outside a window of it: the window holds the crop's inside part.
  const Window crop = local_window(image, crop_of(width, height), "center_crop", sample);
  image = padded_crop(image, 0, 0, PadMode::Constant, 0, crop.top, crop.left, crop.height, crop.width);
}

FLOWRUN_REGISTER_STAGE(CenterCrop);

}  // namespace flowrun::stages
