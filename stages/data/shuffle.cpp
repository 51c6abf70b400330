#include "stages/data/shuffle.h"

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema Shuffle::schema() {
  return Schema("shuffle", "sampler op: a new random order every epoch, from (seed, epoch)").provides("sampler").param(sampler_seed_param());
}

void Shuffle::apply(SampleSet& set, int epoch) const {
  rng(static_cast<uint64_t>(epoch)).shuffle(set.indices);
}

FLOWRUN_REGISTER_STAGE(Shuffle);

}  // namespace flowrun::stages
