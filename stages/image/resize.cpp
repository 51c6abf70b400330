#include "stages/image/resize.h"

#include "pipeline/registry.h"
#include "stages/image/geometry.h"

namespace flowrun::stages {

Schema Resize::schema() {
  Schema schema("resize", "bilinear resize as torchvision's Resize: size=N sets the shorter side, height+width both");
  SizeParams::declare(schema, "shorter side");
  return schema;
}

Resize::Resize(const StageInit& init) {
  if (init.params.get_int("size") > 0) shorter_side_ = static_cast<int>(init.params.get_int("size"));
  else exact_ = SizeParams::read(init.params);
}

void Resize::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_pixels(sample, "resize");
  int out_w = exact_.width, out_h = exact_.height;
  if (shorter_side_ > 0) shorter_side_size(image.width, image.height, shorter_side_, out_w, out_h);
  if (out_w != image.width || out_h != image.height) image = resize_bilinear(image, out_w, out_h);
}

FLOWRUN_REGISTER_STAGE(Resize);

}  // namespace flowrun::stages
