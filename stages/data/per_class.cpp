#include "stages/data/per_class.h"

#include <map>
#include <spdlog/spdlog.h>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema PerClass::schema() {
  return Schema("per_class", "sampler op: k samples of every class (few-shot), chosen once from the seed")
      .provides("sampler")
      .graph_check(refuse_after_keep_labels())
      .param(Int("k", "samples per class").range(1, 1000000000))
      .param(sampler_seed_param());
}

PerClass::PerClass(const StageInit& init) : SamplerOp(init, "per_class"), k_(init.params.get_int("k")) {}

void PerClass::apply(SampleSet& set, int) const {
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (int64_t index : set.indices) by_class[set.labels[index]].push_back(index);
  std::vector<int64_t> kept;
  for (auto& [label, members] : by_class) {
    Rng rng = this->rng(0, static_cast<uint64_t>(label));
    size_t take = std::min<size_t>(members.size(), static_cast<size_t>(k_));
    if (take < static_cast<size_t>(k_)) {
      std::string name = label >= 0 && static_cast<size_t>(label) < set.class_names.size()
                             ? set.class_names[label] : std::to_string(label);
      spdlog::warn("per_class: class '{}' has {} samples, fewer than k={}; taking all", name, members.size(), k_);
    }
    rng.choose_front(members, take);
    kept.insert(kept.end(), members.begin(), members.begin() + take);
  }
  set.indices = keep_in_order(set.indices, std::move(kept));
}

FLOWRUN_REGISTER_STAGE(PerClass);

}  // namespace flowrun::stages
