// `shard`: this rank's share for data-parallel training, as PyTorch's
// DistributedSampler: padded to a multiple of `world` by repeating from the
// start, then every world-th sample from `rank`.
#pragma once

#include "stages/data/sampler.h"

namespace flowrun::stages {

class Shard : public SamplerOp {
 public:
  static Schema schema();
  explicit Shard(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;

 private:
  int64_t rank_, world_;
};

}  // namespace flowrun::stages
