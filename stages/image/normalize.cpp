#include "stages/image/normalize.h"

#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/data/sample.h"
#include "stages/image/pixel_kernels.h"
#include "stages/image/random_op.h"

namespace flowrun::stages {

namespace {
const std::array<double, 3> kImagenetMean = {0.485, 0.456, 0.406}, kImagenetStd = {0.229, 0.224, 0.225};
const std::array<double, 3> kCifarMean = {0.4914, 0.4822, 0.4465}, kCifarStd = {0.2023, 0.1994, 0.2010};
}  // namespace

Schema Normalize::schema() {
  return Schema("normalize", "to float CHW, (x/255 - mean) / std per channel (ToTensor + Normalize)")
      .param(String("stats", "imagenet, cifar, or custom (then mean= and std=)").def(std::string("imagenet"))
                 .one_of({"imagenet", "cifar", "custom"}))
      .param(FloatList("mean", "per-channel means for stats=custom (1 or 3 values)").def(std::vector<double>{}))
      .param(FloatList("std", "per-channel deviations for stats=custom (1 or 3 values)").def(std::vector<double>{})
                 .at_least(1e-12))
      .param(Bool("in_batch", "leave the conversion to the batch stage (one pass into the batch tensor)").def(true))
      .check([](const Params& p) -> std::string {
        bool custom = p.get_string("stats") == "custom";
        size_t m = p.get_float_list("mean").size(), s = p.get_float_list("std").size();
        if (!custom) return m || s ? "mean= and std= need stats=custom" : "";
        if ((m != 1 && m != 3) || (s != 1 && s != 3)) return "stats=custom needs mean= and std= of 1 or 3 values";
        return "";
      });
}

Normalize::Normalize(const StageInit& init)
    : normalization_(std::make_shared<Normalization>()), in_batch_(init.params.get_bool("in_batch")) {
  const std::string stats = init.params.get_string("stats");
  std::array<double, 3> mean = kImagenetMean, std = kImagenetStd;
  if (stats == "cifar") {
    mean = kCifarMean;
    std = kCifarStd;
  } else if (stats == "custom") {
    const auto& m = init.params.get_float_list("mean");
    const auto& s = init.params.get_float_list("std");
    for (int c = 0; c < 3; ++c) {
      mean[c] = m[m.size() == 1 ? 0 : c];
      std[c] = s[s.size() == 1 ? 0 : c];
    }
  }
  Normalization& n = *normalization_;
  for (int c = 0; c < 3; ++c) {
    n.mean[c] = static_cast<float>(mean[c]);
    n.std[c] = static_cast<float>(std[c]);
    // The same float operations as torchvision: (x / 255 - mean) / std in float32.
    for (int v = 0; v < 256; ++v) n.table[c][v] = (static_cast<float>(v) / 255.0f - n.mean[c]) / n.std[c];
  }
}

void Normalization::apply(const Image& image, float* dst) const {
  const float* tables[3] = {table[0].data(), table[1].data(), table[2].data()};
  // The scalar table loop, not the dispatched kernel: its AVX-512 gathers
  // were slower than three scalar loads per pixel on the 2-core Zen 4
  // machine (bench/pixel_kernels_bench: 33.7 vs 30.4 us per 213x160 image),
  // and exact results rule out computing (x/255 - mean)/std any cheaper.
  kernels::planes_from_tables_scalar(image.pixels.data(), static_cast<size_t>(image.height) * image.width,
                                     image.channels == 3 ? 3 : 1, tables, dst);
}

void Normalize::process(Item& item) {
  Sample& sample = item.get<Sample>();
  const Image& image = require_pixels(sample, "normalize");
  if (image.channels != 1 && image.channels != 3)
    throw std::runtime_error("normalize: " + sample.describe() + " has " + std::to_string(image.channels) + " channels");
  sample.normalization = normalization_;
  if (in_batch_) return;
  FloatImage& out = sample.tensor;
  out.channels = image.channels;
  out.height = image.height;
  out.width = image.width;
  out.data.resize(static_cast<size_t>(image.channels) * image.height * image.width);
  normalization_->apply(image, out.data.data());
  sample.image = Image();  // the 8-bit pixels are not needed downstream
}

FLOWRUN_REGISTER_STAGE(Normalize);

}  // namespace flowrun::stages
