#include "stages/data/subset.h"

#include <cmath>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema Subset::schema() {
  return Schema("subset", "sampler op: a fixed random part of the samples, the same every epoch, kept in order").provides("sampler")
      .param(Float("fraction", "share of the samples to keep").def(1.0).range(0, 1))
      .param(Int("count", "number of samples to keep (wins over fraction when > 0)").def(int64_t{0}).at_least(0))
      .param(sampler_seed_param());
}

Subset::Subset(const StageInit& init)
    : SamplerOp(init, "subset"), fraction_(init.params.get_float("fraction")), count_(init.params.get_int("count")) {}

void Subset::apply(SampleSet& set, int) const {
  size_t n = set.indices.size();
  size_t keep = count_ > 0 ? std::min<size_t>(n, static_cast<size_t>(count_))
                           : static_cast<size_t>(std::llround(fraction_ * static_cast<double>(n)));
  std::vector<int64_t> chosen = set.indices;
  rng(0).choose_front(chosen, keep);  // no epoch: the same subset every epoch
  chosen.resize(keep);
  set.indices = keep_in_order(set.indices, std::move(chosen));
}

FLOWRUN_REGISTER_STAGE(Subset);

}  // namespace flowrun::stages
