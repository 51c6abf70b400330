// `shuffle`: a new order every epoch, from (seed, epoch).
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Shuffle : public SamplerOp {
 public:
  static Schema schema();
  explicit Shuffle(const StageInit& init) : SamplerOp(init, "shuffle") {}
  void apply(SampleSet& set, int epoch) const override;
};

}  // namespace flowrun::stages
