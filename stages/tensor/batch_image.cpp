#include "stages/tensor/batch_image.h"

#include <algorithm>
#include <cmath>

namespace flowrun::stages {

Image batch_image(const Batch& batch, int64_t index) {
  at::Tensor chw = batch.images[index].to(at::kCPU).to(at::kFloat).contiguous();
  const int channels = static_cast<int>(chw.size(0)), height = static_cast<int>(chw.size(1)),
            width = static_cast<int>(chw.size(2));
  const float* data = chw.data_ptr<float>();
  Image image(width, height, channels == 1 ? 1 : 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < image.channels; ++c) {
        float v = data[(static_cast<size_t>(c) * height + y) * width + x] * batch.std[c] + batch.mean[c];
        image.row(y)[x * image.channels + c] = static_cast<uint8_t>(std::clamp(std::lround(v * 255.0f), 0L, 255L));
      }
  return image;
}

std::string class_name(const Batch& batch, int64_t label) {
  const auto* names = batch.dataset ? &batch.dataset->class_names : nullptr;
  if (names && label >= 0 && label < static_cast<int64_t>(names->size())) return (*names)[label];
  return std::to_string(label);
}

}  // namespace flowrun::stages
