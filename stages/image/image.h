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

struct Image {
  int width = 0, height = 0, channels = 0;
  PixelBuffer<uint8_t> pixels;  // row-major, channels interleaved

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
