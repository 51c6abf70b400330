// Pixels as the image stages pass them: 8-bit interleaved (HWC) RGB after
// decode and augmentation, then float planar (CHW) after normalize.
#pragma once

#include <cstdint>
#include <vector>

namespace flowrun::stages {

struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // row-major, channels interleaved

  Image() = default;
  Image(int w, int h, int c) : width(w), height(h), channels(c), pixels(static_cast<size_t>(w) * h * c) {}
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  bool empty() const { return pixels.empty(); }
};

struct FloatImage {
  int channels = 0, height = 0, width = 0;
  std::vector<float> data;  // channel planes, each row-major
  bool empty() const { return data.empty(); }
};

}  // namespace flowrun::stages
