// Fuzz target: image decode (JPEG via TurboJPEG, PNG via libpng, WebP via
// libwebp, TIFF via libtiff, BMP/PPM/PGM via stb_image), at full
// size and at a reduced DCT scale. Any bytes give pixels or a
// std::runtime_error; the pixel cap holds before anything large is allocated.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "stages/image/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (int min_side : {0, 16}) {
    try {
      flowrun::stages::Image image = flowrun::stages::decode_image(data, size, int64_t{1} << 22, min_side, size % 2);
      if (!image.empty()) (void)image.pixels[image.pixels.size() - 1];
    } catch (const std::runtime_error&) {
    }
  }
  return 0;
}
