#include "stages/train/precompute.h"

#include <algorithm>

namespace flowrun::stages {

namespace {
const ResolvedOp* only_op(const ResolvedPhase& phase, const std::string& name) {
  const ResolvedStage* stage = phase.find(name);
  return stage && stage->ops.size() == 1 ? &stage->ops.front() : nullptr;
}
}  // namespace

const std::vector<std::string>& flow_of(const ResolvedGraph& graph, const std::string& stage) {
  static const std::vector<std::string> none;
  for (const auto& chain : graph.chains)
    if (std::find(chain.begin(), chain.end(), stage) != chain.end()) return chain;
  return none;
}

std::string random_stage_before(const ResolvedPhase& phase, const std::vector<std::string>& chain,
                                const std::string& stage) {
  for (const std::string& name : chain) {
    if (name == stage) break;
    const ResolvedStage* upstream = phase.find(name);
    if (!upstream) continue;
    for (const ResolvedOp& op : upstream->ops)
      if (op.stage_type && op.stage_type->schema.is_randomized())
        return "stage '" + name + "' (" + op.type + ") draws new random augmentations every epoch";
  }
  return "";
}

PrecomputePlan plan_precompute(const ResolvedPhase& phase, const std::vector<std::string>& chain,
                               const std::string& train) {
  PrecomputePlan plan;
  const ResolvedOp* op = only_op(phase, train);
  if (!op || op->type != "train") return plan;
  const std::string mode = op->params.get_string("precompute");
  plan.forced = mode == "on";
  auto off = [&](const std::string& why) {
    plan.use = false;
    plan.why = why;
    return plan;
  };
  if (mode == "off") return off("precompute=off");
  if (op->params.get_int("lr_find") > 0) return off("the learning-rate range test runs the whole model");
  if (!op->params.is_auto("adaptation") && !op->params.get_string("adaptation").empty())
    return off("adaptation '" + op->params.get_string("adaptation") + "' trains the features on the target's images");
  const std::string freezer = op->params.get_string("freezer");
  if (freezer.empty()) return off("no freeze stage: the backbone trains");
  const ResolvedOp* freeze = only_op(phase, freezer);
  if (!freeze) return off("freezer '" + freezer + "' is not a single freeze stage in this phase");
  const Params& f = freeze->params;
  const std::string freeze_mode = f.get_string("mode");
  const bool whole_backbone = freeze_mode == "backbone" || (freeze_mode == "until" && f.get_string("until") == "layer4");
  if (!whole_backbone)
    return off("freezer '" + freezer + "' trains " + (freeze_mode == "none" ? "the whole" : "part of the") +
               " backbone (mode=" + freeze_mode + ")");
  const int64_t unfreeze_every = f.get_int("unfreeze_every");
  if (unfreeze_every > 0 && unfreeze_every < phase.epochs)
    return off("freezer '" + freezer + "' unfreezes blocks during the phase (unfreeze_every=" +
               std::to_string(unfreeze_every) + ")");
  if (f.get_bool("train_bn")) return off("freezer '" + freezer + "' lets BatchNorm statistics change (train_bn=true)");
  if (std::string random = random_stage_before(phase, chain, train); !random.empty()) return off(random);
  if (phase.epochs < 2 && !plan.forced) return off("one epoch in the phase: nothing to reuse");
  plan.use = true;
  plan.why = "the backbone stays frozen (BatchNorm in eval) and nothing before '" + train +
             "' is random: backbone features are computed once per sample, later epochs train the head alone";
  return plan;
}

std::string precompute_notes(const ResolvedGraph& graph) {
  std::string notes;
  for (const auto& phase : graph.phases)
    for (const auto& chain : graph.chains)
      for (const auto& name : chain) {
        const ResolvedStage* stage = phase.find(name);
        if (!stage || stage->ops.size() != 1 || stage->ops.front().type != "train") continue;
        const PrecomputePlan plan = plan_precompute(phase, chain, name);
        notes += "# phase '" + phase.name + "', stage '" + name + "': precompute " + (plan.use ? "on" : "off") + ": " +
                 plan.why + "\n";
      }
  return notes;
}

torch::Tensor FeatureCache::lookup(const std::vector<int64_t>& indices) const {
  if (!storage_.defined() || indices.empty()) return {};
  std::vector<int64_t> slots;
  slots.reserve(indices.size());
  for (int64_t index : indices) {
    auto it = slot_of_.find(index);
    if (it == slot_of_.end()) return {};
    slots.push_back(it->second);
  }
  return storage_.index_select(0, torch::tensor(slots, torch::kLong).to(storage_.device()));
}

bool FeatureCache::store(const std::vector<int64_t>& indices, const torch::Tensor& features) {
  std::vector<int64_t> rows, keys;
  for (size_t i = 0; i < indices.size(); ++i)
    if (!slot_of_.count(indices[i]) && std::find(keys.begin(), keys.end(), indices[i]) == keys.end()) {
      rows.push_back(static_cast<int64_t>(i));
      keys.push_back(indices[i]);
    }
  if (rows.empty()) return true;
  const int64_t dim = features.size(1), row_bytes = dim * features.element_size();
  const int64_t needed = this->rows() + static_cast<int64_t>(rows.size());
  if (needed * row_bytes > limit_bytes_) return false;
  if (!storage_.defined() || storage_.size(0) < needed) {
    // Grow by doubling, never past the limit.
    int64_t capacity = std::max<int64_t>(needed, storage_.defined() ? storage_.size(0) * 2 : 256);
    capacity = std::max(needed, std::min(capacity, limit_bytes_ / row_bytes));
    torch::Tensor grown = torch::empty({capacity, dim}, features.options());
    if (storage_.defined() && this->rows() > 0) grown.narrow(0, 0, this->rows()).copy_(storage_.narrow(0, 0, this->rows()));
    storage_ = grown;
  }
  const int64_t first = this->rows();
  storage_.narrow(0, first, static_cast<int64_t>(rows.size()))
      .copy_(features.index_select(0, torch::tensor(rows, torch::kLong).to(features.device())));
  for (size_t k = 0; k < keys.size(); ++k) slot_of_[keys[k]] = first + static_cast<int64_t>(k);
  return true;
}

void FeatureCache::clear() {
  storage_ = torch::Tensor();
  slot_of_.clear();
}

}  // namespace flowrun::stages
