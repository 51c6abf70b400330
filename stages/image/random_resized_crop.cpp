#include "stages/image/random_resized_crop.h"

#include <cmath>

#include "pipeline/registry.h"
#include "stages/image/geometry.h"

namespace flowrun::stages {

namespace {
std::string check_pair(const Params& p, const char* name) {
  const auto& v = p.get_float_list(name);
  if (v.size() != 2 || v[0] > v[1]) return std::string(name) + " must be [low, high] with low <= high";
  return "";
}
}  // namespace

Schema RandomResizedCrop::schema() {
  Schema schema("random_resized_crop", "a random window of random area and aspect ratio, resized (RandomResizedCrop)");
  schema.randomized();
  SizeParams::declare(schema, "output size");
  return schema.param(FloatList("scale", "range of the window's share of the area").def(std::vector<double>{0.08, 1.0})
                          .range(0, 1))
      .param(FloatList("ratio", "range of the window's aspect ratio (w/h)").def(std::vector<double>{0.75, 4.0 / 3.0})
                 .range(1e-3, 1e3))
      .check([](const Params& p) {
        std::string problem = check_pair(p, "scale");
        return problem.empty() ? check_pair(p, "ratio") : problem;
      });
}

RandomResizedCrop::RandomResizedCrop(const StageInit& init)
    : RandomImageOp(init, "random_resized_crop"), size_(SizeParams::read(init.params)) {
  scale_lo_ = init.params.get_float_list("scale")[0];
  scale_hi_ = init.params.get_float_list("scale")[1];
  ratio_lo_ = init.params.get_float_list("ratio")[0];
  ratio_hi_ = init.params.get_float_list("ratio")[1];
}

Window RandomResizedCrop::get_params(const Sample& sample, int W, int H) const {
  const double area = static_cast<double>(H) * W;
  Rng rng = rng_for(sample);
  // torchvision's get_params: ten tries, then a centred fallback.
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target_area = area * rng.uniform(scale_lo_, scale_hi_);
    double aspect = std::exp(rng.uniform(std::log(ratio_lo_), std::log(ratio_hi_)));
    int cw = static_cast<int>(std::lround(std::sqrt(target_area * aspect)));
    int ch = static_cast<int>(std::lround(std::sqrt(target_area / aspect)));
    if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
      int top = static_cast<int>(rng.below(H - ch + 1));
      int left = static_cast<int>(rng.below(W - cw + 1));
      return Window{top, left, ch, cw};
    }
  }
  int h = H, w = W;
  double in_ratio = static_cast<double>(W) / H;
  if (in_ratio < ratio_lo_) {
    w = W;
    h = static_cast<int>(std::lround(w / ratio_lo_));
  } else if (in_ratio > ratio_hi_) {
    h = H;
    w = static_cast<int>(std::lround(h * ratio_hi_));
  }
  return Window{(H - h) / 2, (W - w) / 2, h, w};
}

std::optional<Window> RandomResizedCrop::source_window(const Sample& sample, int width, int height) const {
  return get_params(sample, width, height);
}

void RandomResizedCrop::process(Item& item) {
  Sample& sample = item.get<Sample>();
  Image& image = require_source_pixels(sample, "random_resized_crop");
  const Window w = local_window(image, get_params(sample, full_width(image), full_height(image)),
                                "random_resized_crop", sample);
  image = resize_bilinear(crop(image, w.top, w.left, w.height, w.width), size_.width, size_.height);
}

FLOWRUN_REGISTER_STAGE(RandomResizedCrop);

}  // namespace flowrun::stages
