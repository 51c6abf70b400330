#include "stages/data/shard.h"

#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Shard::schema() {
  return Schema("shard", "sampler op, the last of its sampler: this rank's share for data-parallel training (as "
                         "DistributedSampler; a job's sources shard by themselves unless their sampler has this op)").provides("sampler")
      .param(Int("rank", "this process's rank; auto = its rank in the job (0 alone)").def(Auto{}).or_auto().at_least(0))
      .param(Int("world", "number of ranks; auto = the job's (1 alone)").def(Auto{}).or_auto().range(1, 1 << 20))
      .param(sampler_seed_param())
      .check([](const Params& p) {
        return p.is_auto("rank") || p.is_auto("world") || p.get_int("rank") < p.get_int("world") ? ""
                                                                                                 : "rank must be below world";
      });
}

Shard::Shard(const StageInit& init)
    : SamplerOp(init, "shard"),
      rank_(init.params.get_int_or("rank", init.run.job.rank)),
      world_(init.params.get_int_or("world", init.run.job.world_size)) {
  if (rank_ >= world_) throw std::runtime_error("rank " + std::to_string(rank_) + " is not below world " + std::to_string(world_));
}

void Shard::apply(SampleSet& set, int) const { shard_for_rank(set, rank_, world_); }

FLOWRUN_REGISTER_STAGE(Shard);

}  // namespace flowrun::stages
