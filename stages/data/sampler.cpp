#include "stages/data/sampler.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_map>

#include "pipeline/graph.h"
#include "stages/common/random.h"

namespace flowrun::stages {

ParamSpec sampler_seed_param() {
  return Int("seed", "seed of this op's choices; auto = the run's seed").def(Auto{}).or_auto().at_least(0);
}

Schema::GraphCheck refuse_after_keep_labels(std::function<bool(const Params&)> reads) {
  return [reads](const ResolvedGraph&, const ResolvedPhase&, const ResolvedStage& stage, size_t op) -> std::string {
    const ResolvedOp& me = stage.ops[op];
    if (reads && !reads(me.params)) return "";
    for (size_t i = 0; i < op; ++i) {
      const ResolvedOp& before = stage.ops[i];
      if (before.type == "keep_labels" && before.params.has("task") && before.params.get_string("task").empty())
        return me.type + " comes after keep_labels (op #" + std::to_string(i + 1) + " of sampler '" + stage.name +
               "'), which keeps the class labels of a few samples only, so " + me.type +
               " would choose by the labels left: put keep_labels after the ops that choose, weigh or map samples by class";
    }
    return "";
  };
}

SamplerOp::SamplerOp(const StageInit& init, const std::string& op_type)
    : seed_(static_cast<uint64_t>(init.params.get_int_or("seed", static_cast<int64_t>(init.run.seed)))),
      stream_(hash_name(op_type)),
      op_type_(op_type) {}

SampleSet sample_epoch(const StageDirectory& stages, const std::string& sampler, std::vector<int64_t> labels,
                       std::vector<std::string> class_names, int epoch) {
  SampleSet base;
  base.labels = std::move(labels);
  base.class_names = std::move(class_names);
  return sample_epoch(stages, sampler, std::move(base), epoch);
}

SampleSet sample_epoch(const StageDirectory& stages, const std::string& sampler, SampleSet base, int epoch) {
  SampleSet set = std::move(base);
  set.indices.resize(set.labels.size());
  for (size_t i = 0; i < set.labels.size(); ++i) set.indices[i] = static_cast<int64_t>(i);
  if (sampler.empty()) return set;
  std::vector<Stage*> ops = stages.find(sampler);
  if (ops.empty()) throw std::runtime_error("no stage named '" + sampler + "' to sample with");
  const SamplerOp* thinned = nullptr;  // the op that took samples' classes away
  // An op that chooses or maps by class after keep_labels would choose by
  // the few labels left. Asked before the op runs and again after it (an op
  // may learn only then that it reads classes: weighted's file says).
  auto refuse_after_thinning = [&](const SamplerOp& op) {
    if (thinned && op.reads_classes())
      throw std::runtime_error("sampler '" + sampler + "': " + op.op_type() + " comes after " + thinned->op_type() +
                               ", which keeps the class labels of a few samples only, so " + op.op_type() +
                               " would choose by the labels left: put " + thinned->op_type() +
                               " after the ops that choose, weigh or map samples by class");
  };
  for (Stage* op : ops) {
    auto* sampler_op = dynamic_cast<SamplerOp*>(op);
    if (!sampler_op) throw std::runtime_error("stage '" + sampler + "' is not a sampler");
    refuse_after_thinning(*sampler_op);
    if (set.sharded)
      throw std::runtime_error("sampler '" + sampler + "': shard must be its last op (it cuts the final order)");
    sampler_op->apply(set, epoch);
    refuse_after_thinning(*sampler_op);
    if (sampler_op->thins_classes()) thinned = sampler_op;
  }
  return set;
}

void shard_for_rank(SampleSet& set, int64_t rank, int64_t world) {
  set.sharded = true;
  const std::vector<int64_t>& all = set.indices;
  if (all.empty() || world <= 1) return;
  const size_t n = all.size(), per_rank = (n + world - 1) / world;
  std::vector<int64_t> mine;
  mine.reserve(per_rank);
  for (size_t i = 0; i < per_rank; ++i) {
    const size_t position = rank + i * world;  // in the order padded to per_rank * world
    mine.push_back(all[position % n]);
    if (position >= n) ++set.padded;
  }
  set.indices = std::move(mine);
}

std::vector<int64_t> keep_in_order(const std::vector<int64_t>& indices, std::vector<int64_t> keep) {
  std::unordered_map<int64_t, int64_t> wanted;
  for (int64_t index : keep) ++wanted[index];
  std::vector<int64_t> kept;
  kept.reserve(keep.size());
  for (int64_t index : indices) {
    auto it = wanted.find(index);
    if (it != wanted.end() && it->second > 0) {
      kept.push_back(index);
      --it->second;
    }
  }
  return kept;
}

}  // namespace flowrun::stages
