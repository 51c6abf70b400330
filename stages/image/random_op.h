// Base of the random image ops: a sample's random choices come from
// (run seed, stage and op, epoch, sample index) — never from a shared
// generator — so they do not depend on threads or order.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "pipeline/registry.h"
#include "pipeline/stage.h"
#include "stages/common/random.h"
#include "stages/data/sample.h"

namespace flowrun::stages {

// Its schema must say `.randomized()`: a stage that draws new numbers every
// epoch is then never taken as deterministic (precompute would cache its
// first draw and the augmentation would silently stop augmenting).
// rng_for() (its RandomStream) throws at the first draw of a stage whose schema does not.
class RandomImageOp : public TransformStage {
 public:
  RandomImageOp(const StageInit& init, const std::string& op_type) : stream_(init, op_type) {}
  void begin_epoch(const EpochInfo& epoch) override { epoch_ = static_cast<uint64_t>(epoch.epoch); }

 protected:
  Rng rng_for(const Sample& sample) const { return stream_.draw(epoch_, static_cast<uint64_t>(sample.index)); }

 private:
  RandomStream stream_;  // refuses to draw for a type registered without Schema::randomized()
  uint64_t epoch_ = 0;
};

// The sample's pixels, or an error naming the sample when it was never
// decoded, or when decode gave only a window of them (Image::is_window).
Image& require_pixels(Sample& sample, const char* op);

// An op that reads only a window of its input image. `decode partial=auto`
// right before it decodes just that window (JPEG), and the op crops within it.
class SourceWindowOp {
 public:
  virtual ~SourceWindowOp() = default;
  // The part of a width x height image that process() will read for
  // `sample` (the very same draw), or nothing when it reads all of it.
  virtual std::optional<Window> source_window(const Sample& sample, int width, int height) const = 0;
};

// For a SourceWindowOp: the sample's pixels, a whole image or decode's
// window of one (full_width() and full_height() give the whole size).
Image& require_source_pixels(Sample& sample, const char* op);
inline int full_width(const Image& image) { return image.is_window() ? image.full_width : image.width; }
inline int full_height(const Image& image) { return image.is_window() ? image.full_height : image.height; }
// `window` (full image coordinates) in `image`'s own buffer coordinates;
// throws when a window image does not hold it exactly. Only the part of
// `window` inside the full image must be there (a crop may pad beyond it).
Window local_window(const Image& image, const Window& window, const char* op, const Sample& sample);

// Output size from `size` (square) or `height` + `width` (both > 0 win).
struct SizeParams {
  int height = 0, width = 0;
  static void declare(Schema& schema, const std::string& what);
  static SizeParams read(const Params& params);
  static std::string check(const Params& params);
};

}  // namespace flowrun::stages
