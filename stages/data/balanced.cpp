#include "stages/data/balanced.h"

#include <map>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema Balanced::schema() {
  return Schema("balanced", "sampler op: the same number of samples of every class each epoch, shuffled")
      .provides("sampler")
      .graph_check(refuse_after_keep_labels())
      .param(String("mode", "over: repeat rarer classes; under: thin commoner ones").def(std::string("over"))
                 .one_of({"over", "under"}))
      .param(sampler_seed_param());
}

Balanced::Balanced(const StageInit& init) : SamplerOp(init, "balanced"), over_(init.params.get_string("mode") == "over") {}

void Balanced::apply(SampleSet& set, int epoch) const {
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (int64_t index : set.indices) by_class[set.labels[index]].push_back(index);
  if (by_class.empty()) return;
  size_t target = over_ ? 0 : SIZE_MAX;
  for (const auto& [label, members] : by_class) target = over_ ? std::max(target, members.size()) : std::min(target, members.size());
  Rng rng = this->rng(static_cast<uint64_t>(epoch));
  std::vector<int64_t> out;
  for (auto& [label, members] : by_class) {
    rng.shuffle(members);
    for (size_t i = 0; i < target; ++i) out.push_back(members[i % members.size()]);
  }
  rng.shuffle(out);
  set.indices = std::move(out);
}

FLOWRUN_REGISTER_STAGE(Balanced);

}  // namespace flowrun::stages
