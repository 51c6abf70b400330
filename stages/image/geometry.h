// Pixel geometry shared by the image stages: PIL-exact bilinear resizing
// (torchvision's Resize on PIL images), crops with padding, flips.
#pragma once

#include <string>

#include "stages/image/image.h"

namespace flowrun::stages {

// Bilinear resize with PIL's antialiasing filter (support scaled by the
// downscale factor) and its 8-bit fixed-point rounding, so the result equals
// PIL's Image.resize(..., BILINEAR) pixel for pixel. Crops a box of the
// source first when given (left, top, width, height in source pixels).
Image resize_bilinear(const Image& in, int out_width, int out_height);
Image resize_bilinear(const Image& in, int left, int top, int width, int height, int out_width, int out_height);

enum class PadMode { Constant, Edge, Reflect, Symmetric };
PadMode parse_pad_mode(const std::string& name);  // constant, edge, reflect, symmetric

// The window (top, left, height, width) of `in` padded by pad_y rows above
// and below and pad_x columns left and right: torchvision's pad() then crop().
// Window parts beyond the padding are filled as the mode says (so a window
// partly outside an unpadded image works too).
Image padded_crop(const Image& in, int pad_y, int pad_x, PadMode mode, uint8_t fill, int top, int left, int height,
                  int width);

// Plain crop; the window must lie inside the image.
Image crop(const Image& in, int top, int left, int height, int width);

void flip_horizontal(Image& image);

// torchvision's sizes: Resize(int) keeps the aspect ratio with the shorter
// side at `size` (the longer side truncated); CenterCrop rounds half to even.
void shorter_side_size(int width, int height, int size, int& out_width, int& out_height);
int center_offset(int outer, int inner);

}  // namespace flowrun::stages
