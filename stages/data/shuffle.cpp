#include "stages/data/shuffle.h"

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema Shuffle::schema() {
  return Schema("shuffle", "sampler op: a new random order every epoch, from (seed, epoch)").param(sampler_seed_param());
}

void Shuffle::apply(SampleSet& set, int epoch) const {
  Rng rng(seed_, stream_, static_cast<uint64_t>(epoch));
  auto& v = set.indices;
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

FLOWRUN_REGISTER_STAGE(Shuffle);

}  // namespace flowrun::stages
