// `classes`: keeps some classes (by name or by id) and relabels them 0..k-1
// in the order given.
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Classes : public SamplerOp {
 public:
  static Schema schema();
  explicit Classes(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool reads_classes() const override { return true; }

 private:
  std::vector<std::string> names_;
  std::vector<int64_t> ids_;
};

}  // namespace flowrun::stages
