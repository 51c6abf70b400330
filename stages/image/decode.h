// `decode`: reads each sample's file and decodes it to 8-bit RGB, pixel for
// pixel as PIL's Image.open(f).convert('RGB') (torchvision's ImageFolder
// loader, Pillow 9.4): JPEG with libjpeg-turbo (TurboJPEG API, optionally at a
// reduced DCT scale when the image is much larger than needed; greyscale and
// CMYK/YCCK come out RGB), PNG with libpng (every colour type and depth),
// WebP with libwebp, TIFF with libtiff, BMP and binary PPM/PGM with
// stb_image. Alpha is dropped, keeping the stored colour; EXIF/TIFF
// orientation is ignored (as torchvision). The format is read from the
// bytes, not the file name. A pixel cap guards against decompression bombs.
// Bad files are skipped (logged once, counted as `skipped`) or stop the run,
// per `on_error`; a class none of whose visited files decode stops the run
// at the end of the epoch either way. Samples that already have pixels (IDX)
// pass through. partial=auto: when the op right after decode crops
// (a SourceWindowOp), a JPEG is decoded only where it reads.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <mutex>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "pipeline/stage.h"
#include "stages/data/sample.h"
#include "stages/image/image.h"
#include "stages/image/random_op.h"

namespace flowrun::stages {

// Decodes an in-memory JPEG, PNG, WebP, TIFF, BMP or binary PPM/PGM to
// 8-bit RGB (HWC). `min_short_side` > 0 lets a JPEG decode at
// the smallest DCT scale whose shorter side is still at least that. Throws
// std::runtime_error saying what is wrong with the bytes.
Image decode_image(const uint8_t* data, size_t size, int64_t max_pixels, int min_short_side = 0, bool fast = false);

struct DecodeOptions {
  int64_t max_pixels = 100'000'000;
  int min_short_side = 0;  // see above
  bool fast = false;
  // Partial decode: given the decoded size, the window its reader will
  // crop (nothing: all of it). A JPEG then decodes just that part (see
  // Image::is_window), bit-identical there to the full decode, with the
  // same errors.
  std::function<std::optional<Window>(int width, int height)> window;
  // Stop decoding after the window where that provably cannot change the
  // file's error or acceptance (else the rest is entropy-decoded, as in a
  // full decode). Off only to measure the difference.
  bool stop_after_window = true;
};
Image decode_image(const uint8_t* data, size_t size, const DecodeOptions& options);

class Decode : public TransformStage {
 public:
  static Schema schema();
  explicit Decode(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item) override;
  // Throws naming the class when a class had files visited and none decoded.
  void end_epoch(const EpochInfo& epoch) override;
  void report(Report& report) const override;

 private:
  bool skip_;
  int64_t max_pixels_, max_bytes_;
  int min_size_;
  bool fast_;
  bool partial_;  // partial=auto
  std::string name_;
  const StageDirectory& stages_;
  const SourceWindowOp* next_crop_ = nullptr;  // the op after this one, when it crops (partial=auto); found each epoch
  const SourceWindowOp* find_next_crop() const;
  std::atomic<int64_t> skipped_{0}, decoded_{0}, partial_count_{0};
  std::mutex logged_mutex_;
  std::set<std::string> logged_;  // bad files already reported
  std::mutex classes_mutex_;
  std::vector<std::pair<int64_t, int64_t>> per_class_;  // decoded, skipped (whole run), by label
  std::shared_ptr<const DatasetInfo> dataset_;          // class names for the message
};

}  // namespace flowrun::stages
