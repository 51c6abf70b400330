// `split`: a deterministic train/validation split of one source. The same
// seed always puts a sample on the same side; the parts are disjoint by
// construction (`part=train` and `part=val` are complements).
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Split : public SamplerOp {
 public:
  static Schema schema();
  explicit Split(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool reads_classes() const override { return stratified_; }

 private:
  double val_fraction_;
  bool val_part_;
  bool stratified_;
};

}  // namespace flowrun::stages
