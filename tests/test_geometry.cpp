// Pixel geometry: padding modes, crops, flips, sizes.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

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

// Padded crops of random RGB images at random windows, in every mode (the
// crop copies runs of columns forwards, backwards and as fill): every pixel
// is the one numpy.pad's rule names, worked out here pixel by pixel.
TEST(Geometry, PaddedCropsEqualThePerPixelRule) {
  auto reference_index = [](int i, int n, PadMode mode) {
    // numpy.pad, one step at a time: reflect/symmetric bounce off the border.
    if (mode == PadMode::Constant) return i >= 0 && i < n ? i : -1;
    if (mode == PadMode::Edge) return std::clamp(i, 0, n - 1);
    while (i < 0 || i >= n) {
      if (n == 1) return 0;
      if (mode == PadMode::Reflect) i = i < 0 ? -i : 2 * (n - 1) - i;
      else i = i < 0 ? -i - 1 : 2 * n - 1 - i;
    }
    return i;
  };
  std::mt19937 rng(7);
  auto below = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int trial = 0; trial < 300; ++trial) {
    const int w = 1 + below(23), h = 1 + below(9), pad_x = below(30), pad_y = below(12);
    Image in(w, h, 3);
    for (auto& v : in.pixels) v = static_cast<uint8_t>(rng());
    const PadMode mode = static_cast<PadMode>(below(4));
    const int height = 1 + below(h + 2 * pad_y), width = 1 + below(w + 2 * pad_x);
    const int top = below(h + 2 * pad_y - height + 1), left = below(w + 2 * pad_x - width + 1);
    const Image out = padded_crop(in, pad_y, pad_x, mode, 77, top, left, height, width);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const int sy = reference_index(top + y - pad_y, h, mode), sx = reference_index(left + x - pad_x, w, mode);
        for (int c = 0; c < 3; ++c) {
          const int want = sy < 0 || sx < 0 ? 77 : in.row(sy)[sx * 3 + c];
          ASSERT_EQ(out.row(y)[x * 3 + c], want) << "mode " << static_cast<int>(mode) << ", " << w << "x" << h
                                                 << " padded " << pad_x << "," << pad_y << ", pixel " << x << "," << y;
        }
      }
  }
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
