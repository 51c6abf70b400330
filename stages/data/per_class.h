// `per_class`: k samples of every class (few-shot), chosen once from the seed.
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class PerClass : public SamplerOp {
 public:
  static Schema schema();
  explicit PerClass(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool reads_classes() const override { return true; }

 private:
  int64_t k_;
};

}  // namespace flowrun::stages
