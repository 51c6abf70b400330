// `decode`: reads each sample's file and decodes it to 8-bit RGB: JPEG with
// libjpeg-turbo (TurboJPEG API, optionally at a reduced DCT scale when the
// image is much larger than needed; grayscale and CMYK come out RGB), PNG
// with libpng. The format is read from the bytes, not the file name. A pixel
// cap guards against decompression bombs. Bad files are skipped (logged once,
// counted as `skipped`) or stop the run, per `on_error`. Samples that already
// have pixels (IDX) pass through.
#pragma once

#include <atomic>
#include <mutex>
#include <set>

#include "pipeline/stage.h"
#include "stages/image/image.h"

namespace flowrun::stages {

// Decodes an in-memory JPEG or PNG. `min_short_side` > 0 lets a JPEG decode at
// the smallest DCT scale whose shorter side is still at least that. Throws
// std::runtime_error saying what is wrong with the bytes.
Image decode_image(const uint8_t* data, size_t size, int64_t max_pixels, int min_short_side = 0, bool fast = false);

class Decode : public TransformStage {
 public:
  static Schema schema();
  explicit Decode(const StageInit& init);
  void process(Item& item) override;
  void report(Report& report) const override;

 private:
  bool skip_;
  int64_t max_pixels_, max_bytes_;
  int min_size_;
  bool fast_;
  std::atomic<int64_t> skipped_{0}, decoded_{0};
  std::mutex logged_mutex_;
  std::set<std::string> logged_;  // bad files already reported
};

}  // namespace flowrun::stages
