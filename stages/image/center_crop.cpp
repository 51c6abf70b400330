#include "stages/image/center_crop.h"

#include "pipeline/registry.h"
#include "stages/image/geometry.h"

namespace flowrun::stages {

Schema CenterCrop::schema() {
  Schema schema("center_crop", "the centred window of the given size (CenterCrop)");
  SizeParams::declare(schema, "crop size");
  return schema;
}

void CenterCrop::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "center_crop");
  if (image.width == size_.width && image.height == size_.height) return;
  // A crop larger than the image: torchvision pads (larger - smaller) // 2 before it.
  auto offset = [](int outer, int inner) { return inner > outer ? -((inner - outer) / 2) : center_offset(outer, inner); };
  int top = offset(image.height, size_.height);
  int left = offset(image.width, size_.width);
  image = padded_crop(image, 0, 0, PadMode::Constant, 0, top, left, size_.height, size_.width);
}

FLOWRUN_REGISTER_STAGE(CenterCrop);

}  // namespace flowrun::stages
