#include "stages/image/random_op.h"

#include <algorithm>
#include <stdexcept>

namespace flowrun::stages {

Image& require_source_pixels(Sample& sample, const char* op) {
  if (sample.image.empty())
    throw std::runtime_error(std::string(op) + ": " + sample.describe() + " has no pixels (put decode before it)");
  return sample.image;
}

Image& require_pixels(Sample& sample, const char* op) {
  Image& image = require_source_pixels(sample, op);
  // Never taken for the whole image: decode windows only for a crop op it found right after it.
  if (image.is_window())
    throw std::runtime_error(std::string(op) + ": " + sample.describe() + " holds only a window of its image " +
                             "(decode partial=auto decoded it for a crop); give decode partial=off");
  return image;
}

Window local_window(const Image& image, const Window& window, const char* op, const Sample& sample) {
  if (!image.is_window()) return window;
  // The part inside the full image must lie where the pixels are exact.
  const int top = std::max(window.top, 0), left = std::max(window.left, 0);
  const Window inside{top, left, std::min(window.top + window.height, image.full_height) - top,
                      std::min(window.left + window.width, image.full_width) - left};
  if (inside.height > 0 && inside.width > 0 && !image.exact.contains(inside))
    throw std::runtime_error(std::string(op) + ": " + sample.describe() + ": decode partial=auto decoded a window " +
                             "that does not hold this crop (a bug; give decode partial=off)");
  return Window{window.top - image.origin_top, window.left - image.origin_left, window.height, window.width};
}

void SizeParams::declare(Schema& schema, const std::string& what) {
  schema.param(Int("size", what + ": a square side (0 = use height and width)").def(int64_t{0}).range(0, 1 << 16))
      .param(Int("height", "output height (with width)").def(int64_t{0}).range(0, 1 << 16))
      .param(Int("width", "output width (with height)").def(int64_t{0}).range(0, 1 << 16))
      .check(&SizeParams::check);
}

SizeParams SizeParams::read(const Params& params) {
  SizeParams size;
  if (params.get_int("height") > 0) {
    size.height = static_cast<int>(params.get_int("height"));
    size.width = static_cast<int>(params.get_int("width"));
  } else {
    size.height = size.width = static_cast<int>(params.get_int("size"));
  }
  return size;
}

std::string SizeParams::check(const Params& params) {
  bool square = params.get_int("size") > 0;
  bool exact = params.get_int("height") > 0 || params.get_int("width") > 0;
  if (square == exact) return "give either size=N or both height= and width=";
  if (exact && (params.get_int("height") == 0 || params.get_int("width") == 0)) return "give both height= and width=";
  return "";
}

}  // namespace flowrun::stages
