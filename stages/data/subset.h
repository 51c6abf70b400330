// `subset`: a fixed random part of the samples (the same every epoch), kept in
// order. `fraction` or `count` (count wins when > 0).
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Subset : public SamplerOp {
 public:
  static Schema schema();
  explicit Subset(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;

 private:
  double fraction_;
  int64_t count_;
};

}  // namespace flowrun::stages
