// Pixels as the image stages pass them: 8-bit interleaved (HWC) RGB after
// decode and augmentation, then float planar (CHW) after normalize.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace flowrun::stages {

// Leaves new elements uninitialised: pixel buffers are always written in
// full right after they are made, and zeroing them first costs a pass.
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <class T>
using PixelBuffer = std::vector<T, UninitializedAllocator<T>>;

// A rectangle of an image, in pixels.
struct Window {
  int top = 0, left = 0, height = 0, width = 0;
  bool contains(const Window& w) const {
    return w.top >= top && w.left >= left && w.top + w.height <= top + height && w.left + w.width <= left + width;
  }
};

struct Image {
  int width = 0, height = 0, channels = 0;
  PixelBuffer<uint8_t> pixels;  // row-major, channels interleaved
  // Set when these pixels are only part of a full_width x full_height image
  // (decode partial=auto, for the crop right after it): they are its rows
  // from origin_top and columns from origin_left, and equal the full
  // decode's pixels within `exact` (in the full image's coordinates; the
  // buffer's edges around it may differ). Only an op that crops inside
  // `exact` may read them: require_pixels() refuses them.
  int full_width = 0, full_height = 0, origin_top = 0, origin_left = 0;
  Window exact;
  bool is_window() const { return full_width > 0; }

  Image() = default;
  Image(int w, int h, int c) : width(w), height(h), channels(c), pixels(static_cast<size_t>(w) * h * c) {}
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * channels; }
  bool empty() const { return pixels.empty(); }
};

struct FloatImage {
  int channels = 0, height = 0, width = 0;
  PixelBuffer<float> data;  // channel planes, each row-major
  bool empty() const { return data.empty(); }
};

}  // namespace flowrun::stages
