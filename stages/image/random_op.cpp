#include "stages/image/random_op.h"

#include <stdexcept>

namespace flowrun::stages {

Image& require_pixels(Sample& sample, const char* op) {
  if (sample.image.empty())
    throw std::runtime_error(std::string(op) + ": " + sample.describe() + " has no pixels (put decode before it)");
  return sample.image;
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
