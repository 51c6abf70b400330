#include "stages/image/geometry.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "stages/image/pixel_kernels.h"

namespace flowrun::stages {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // PIL's fixed point for 8-bit images

// Per output pixel: the first source pixel and integer weights (PIL's
// precompute_coeffs + normalize_coeffs_8bpc, for the bilinear filter).
struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;   // (min, count) per output pixel
  std::vector<int32_t> weights;
};

Coefficients coefficients(double in0, double in1, int in_size, int out_size) {
  double scale = (in1 - in0) / out_size;
  double filterscale = std::max(scale, 1.0);
  double support = 1.0 * filterscale;  // bilinear support = 1
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(2 * out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);
      double w = t < 1.0 ? 1.0 - t : 0.0;
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      double w = ww != 0.0 ? k[x] / ww : k[x];
      c.weights[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace

Image resize_bilinear(const Image& in, int out_width, int out_height) {
  return resize_bilinear(in, 0, 0, in.width, in.height, out_width, out_height);
}

Image resize_bilinear(const Image& in, int left, int top, int width, int height, int out_width, int out_height) {
  if (out_width <= 0 || out_height <= 0) throw std::runtime_error("resize to an empty size");
  const int ch = in.channels;
  // Horizontal pass over the rows the vertical pass will read, then vertical (PIL's order).
  Coefficients horiz = coefficients(left, left + width, in.width, out_width);
  Coefficients vert = coefficients(top, top + height, in.height, out_height);
  int row_first = vert.bounds[0];
  int row_last = vert.bounds[2 * (out_height - 1)] + vert.bounds[2 * (out_height - 1) + 1];
  bool need_horizontal = out_width != in.width || left != 0 || width != out_width;
  bool need_vertical = out_height != in.height || top != 0 || height != out_height;

  Image temp;
  const Image* rows = &in;
  int row_offset = 0;
  if (need_horizontal) {
    temp = Image(out_width, row_last - row_first, ch);
    for (int y = 0; y < temp.height; ++y) {
      const uint8_t* src = in.row(y + row_first);
      uint8_t* dst = temp.row(y);
      for (int xx = 0; xx < out_width; ++xx) {
        int xmin = horiz.bounds[2 * xx], xcount = horiz.bounds[2 * xx + 1];
        const int32_t* k = &horiz.weights[static_cast<size_t>(xx) * horiz.ksize];
        for (int c = 0; c < ch; ++c) {
          int32_t ss = 1 << (kPrecisionBits - 1);
          for (int x = 0; x < xcount; ++x) ss += src[(x + xmin) * ch + c] * k[x];
          dst[xx * ch + c] = clip8(ss);
        }
      }
    }
    rows = &temp;
    row_offset = row_first;
  }
  if (!need_vertical) {
    if (!need_horizontal) return in;
    // Only the rows used: the whole temp when heights match.
    return temp;
  }
  Image out(out_width, out_height, ch);
  const size_t row_bytes = static_cast<size_t>(out_width) * ch;
  std::vector<const uint8_t*> sources(vert.ksize);
  for (int yy = 0; yy < out_height; ++yy) {
    int ymin = vert.bounds[2 * yy], ycount = vert.bounds[2 * yy + 1];
    for (int y = 0; y < ycount; ++y) sources[y] = rows->row(y + ymin - row_offset);
    kernels::weighted_rows(sources.data(), &vert.weights[static_cast<size_t>(yy) * vert.ksize], ycount, row_bytes,
                           kPrecisionBits, out.row(yy));
  }
  return out;
}

PadMode parse_pad_mode(const std::string& name) {
  if (name == "constant") return PadMode::Constant;
  if (name == "edge") return PadMode::Edge;
  if (name == "reflect") return PadMode::Reflect;
  if (name == "symmetric") return PadMode::Symmetric;
  throw std::runtime_error("unknown padding mode '" + name + "'");
}

namespace {
// Source index for padded coordinate i (may be outside [0, n)); -1 = fill.
int map_index(int i, int n, PadMode mode) {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::Constant: return -1;
    case PadMode::Edge: return i < 0 ? 0 : n - 1;
    case PadMode::Reflect: {  // ... 2 1 | 0 1 2 ... n-1 | n-2 ...
      if (n == 1) return 0;
      int period = 2 * (n - 1);
      int m = ((i % period) + period) % period;
      return m < n ? m : period - m;
    }
    case PadMode::Symmetric: {  // ... 1 0 | 0 1 2 ... n-1 | n-1 ...
      int period = 2 * n;
      int m = ((i % period) + period) % period;
      return m < n ? m : period - 1 - m;
    }
  }
  return -1;
}
}  // namespace

Image padded_crop(const Image& in, int pad_y, int pad_x, PadMode mode, uint8_t fill, int top, int left, int height,
                  int width) {
  const int ch = in.channels;
  Image out(width, height, ch);
  // The columns are the same for every row: work them out once, as runs of
  // consecutive source pixels, forwards (the image: one memcpy, glibc's
  // vectorised one) or backwards (reflect and symmetric padding mirror the
  // border: copied pixel by pixel inline, where a memcpy call per pixel cost
  // more than the copy), and fill pixels (src = -1).
  struct Run {
    int dst, src, length, step;  // step: +1 forwards, -1 backwards, 0 fill
  };
  std::vector<Run> runs;
  for (int x = 0; x < width; ++x) {
    int src = map_index(left + x - pad_x, in.width, mode);
    if (!runs.empty()) {
      Run& last = runs.back();
      bool continues = false;
      if (src < 0) continues = last.step == 0;
      else if (last.step != 0 && src == last.src + last.step * last.length) continues = true;
      else if (last.length == 1 && last.step != 0 && src == last.src - 1) {
        last.step = -1;  // a second pixel going backwards: the run mirrors
        continues = true;
      }
      if (continues) {
        ++last.length;
        continue;
      }
    }
    runs.push_back({x, src, 1, src < 0 ? 0 : 1});
  }
  for (int y = 0; y < height; ++y) {
    int sy = map_index(top + y - pad_y, in.height, mode);
    uint8_t* dst = out.row(y);
    if (sy < 0) {
      std::memset(dst, fill, static_cast<size_t>(width) * ch);
      continue;
    }
    const uint8_t* src = in.row(sy);
    for (const Run& run : runs) {
      if (run.step == 0) {
        std::memset(dst + run.dst * ch, fill, static_cast<size_t>(run.length) * ch);
      } else if (run.step > 0) {
        std::memcpy(dst + run.dst * ch, src + run.src * ch, static_cast<size_t>(run.length) * ch);
      } else {
        uint8_t* d = dst + run.dst * ch;
        for (int i = 0; i < run.length; ++i, d += ch) {
          const uint8_t* s = src + (run.src - i) * ch;
          for (int c = 0; c < ch; ++c) d[c] = s[c];
        }
      }
    }
  }
  return out;
}

Image crop(const Image& in, int top, int left, int height, int width) {
  if (top < 0 || left < 0 || top + height > in.height || left + width > in.width)
    throw std::runtime_error("crop window outside the image");
  Image out(width, height, in.channels);
  for (int y = 0; y < height; ++y)
    std::memcpy(out.row(y), in.row(top + y) + left * in.channels, static_cast<size_t>(width) * in.channels);
  return out;
}

void flip_horizontal(Image& image) { kernels::flip_rows(image.pixels.data(), image.width, image.height, image.channels); }

void shorter_side_size(int width, int height, int size, int& out_width, int& out_height) {
  if (width <= height) {
    out_width = size;
    out_height = static_cast<int>(static_cast<int64_t>(size) * height / width);
  } else {
    out_height = size;
    out_width = static_cast<int>(static_cast<int64_t>(size) * width / height);
  }
}

int center_offset(int outer, int inner) {
  return static_cast<int>(std::nearbyint((outer - inner) / 2.0));  // round half to even, as Python's round()
}

}  // namespace flowrun::stages
