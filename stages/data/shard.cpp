#include "stages/data/shard.h"

#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Shard::schema() {
  return Schema("shard", "sampler op: this rank's share for data-parallel training (as DistributedSampler)")
      .param(Int("rank", "this process's rank").def(int64_t{0}).at_least(0))
      .param(Int("world", "number of ranks").def(int64_t{1}).range(1, 1 << 20))
      .param(sampler_seed_param())
      .check([](const Params& p) { return p.get_int("rank") < p.get_int("world") ? "" : "rank must be below world"; });
}

Shard::Shard(const StageInit& init)
    : SamplerOp(init, "shard"), rank_(init.params.get_int("rank")), world_(init.params.get_int("world")) {
  if (rank_ >= world_) throw std::runtime_error("rank " + std::to_string(rank_) + " is not below world " + std::to_string(world_));
}

void Shard::apply(SampleSet& set, int) const {
  const auto& all = set.indices;
  if (all.empty()) return;
  size_t per_rank = (all.size() + world_ - 1) / world_;
  std::vector<int64_t> mine;
  for (size_t i = 0; i < per_rank; ++i) mine.push_back(all[(rank_ + i * world_) % all.size()]);
  set.indices = std::move(mine);
}

FLOWRUN_REGISTER_STAGE(Shard);

}  // namespace flowrun::stages
