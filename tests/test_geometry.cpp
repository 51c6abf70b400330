// Pixel geometry: padding modes, crops, flips, sizes.
#include <gtest/gtest.h>

#include "stages/image/geometry.h"

using namespace flowrun::stages;

namespace {
// A 1-channel image whose pixel at x is x (one row).
Image ramp(int width) {
  Image image(width, 1, 1);
  for (int x = 0; x < width; ++x) image.pixels[x] = static_cast<uint8_t>(x);
  return image;
}
std::vector<int> row_of(const Image& image) { return {image.pixels.begin(), image.pixels.end()}; }
}  // namespace

TEST(Geometry, PaddingModesMatchNumpyPad) {
  Image r = ramp(4);  // 0 1 2 3, padded by 3 on both sides (numpy.pad reference values)
  EXPECT_EQ(row_of(padded_crop(r, 0, 3, PadMode::Reflect, 0, 0, 0, 1, 10)),
            (std::vector<int>{3, 2, 1, 0, 1, 2, 3, 2, 1, 0}));
  EXPECT_EQ(row_of(padded_crop(r, 0, 3, PadMode::Symmetric, 0, 0, 0, 1, 10)),
            (std::vector<int>{2, 1, 0, 0, 1, 2, 3, 3, 2, 1}));
  EXPECT_EQ(row_of(padded_crop(r, 0, 3, PadMode::Edge, 0, 0, 0, 1, 10)),
            (std::vector<int>{0, 0, 0, 0, 1, 2, 3, 3, 3, 3}));
  EXPECT_EQ(row_of(padded_crop(r, 0, 3, PadMode::Constant, 9, 0, 0, 1, 10)),
            (std::vector<int>{9, 9, 9, 0, 1, 2, 3, 9, 9, 9}));
}

TEST(Geometry, CropFlipAndSizes) {
  Image r = ramp(6);
  EXPECT_EQ(row_of(crop(r, 0, 2, 1, 3)), (std::vector<int>{2, 3, 4}));
  EXPECT_THROW(crop(r, 0, 5, 1, 3), std::runtime_error);
  flip_horizontal(r);
  EXPECT_EQ(row_of(r), (std::vector<int>{5, 4, 3, 2, 1, 0}));
  int w = 0, h = 0;
  shorter_side_size(213, 160, 160, w, h);
  EXPECT_EQ(w, 213);
  EXPECT_EQ(h, 160);
  shorter_side_size(500, 375, 160, w, h);
  EXPECT_EQ(w, 213);  // int(160 * 500 / 375) = 213
  EXPECT_EQ(h, 160);
  EXPECT_EQ(center_offset(213, 160), 26);  // round(26.5) = 26, half to even as Python
  EXPECT_EQ(center_offset(215, 160), 28);  // round(27.5) = 28
}

TEST(Geometry, ResizeKeepsAFlatImageFlat) {
  Image flat(37, 23, 3);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 77);
  for (auto [w, h] : {std::pair{10, 7}, std::pair{80, 50}, std::pair{37, 5}}) {
    Image out = resize_bilinear(flat, w, h);
    ASSERT_EQ(out.width, w);
    ASSERT_EQ(out.height, h);
    for (uint8_t v : out.pixels) ASSERT_EQ(v, 77);
  }
}
