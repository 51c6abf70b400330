// `balanced`: the same number of samples of every class each epoch, by
// repeating rarer classes (mode=over) or thinning commoner ones (mode=under).
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Balanced : public SamplerOp {
 public:
  static Schema schema();
  explicit Balanced(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool reads_classes() const override { return true; }

 private:
  bool over_;
};

}  // namespace flowrun::stages
