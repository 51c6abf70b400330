// Base of the random image ops: a sample's random choices come from
// (run seed, stage and op, epoch, sample index) — never from a shared
// generator — so they do not depend on threads or order.
#pragma once

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

// The sample's pixels, or an error naming the sample when it was never decoded.
Image& require_pixels(Sample& sample, const char* op);

// Output size from `size` (square) or `height` + `width` (both > 0 win).
struct SizeParams {
  int height = 0, width = 0;
  static void declare(Schema& schema, const std::string& what);
  static SizeParams read(const Params& params);
  static std::string check(const Params& params);
};

}  // namespace flowrun::stages
