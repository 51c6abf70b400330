#include "stages/data/split.h"

#include <cmath>
#include <map>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

Schema Split::schema() {
  return Schema("split", "sampler op: a deterministic train/validation split; part=train and part=val are disjoint")
      .provides("sampler")
      .graph_check(refuse_after_keep_labels([](const Params& p) { return p.get_bool("stratified"); }))
      .param(Float("val_fraction", "share of the samples that go to validation").def(0.2).range(0, 1))
      .param(String("part", "which side to keep").def(std::string("train")).one_of({"train", "val"}))
      .param(Bool("stratified", "split every class in the same proportion").def(false))
      .param(sampler_seed_param());
}

Split::Split(const StageInit& init)
    : SamplerOp(init, "split"),
      val_fraction_(init.params.get_float("val_fraction")),
      val_part_(init.params.get_string("part") == "val"),
      stratified_(init.params.get_bool("stratified")) {}

void Split::apply(SampleSet& set, int) const {
  // Groups: one per class when stratified, else one for all. Each group is
  // permuted from the seed alone; its first share is validation.
  std::map<int64_t, std::vector<int64_t>> groups;
  for (int64_t index : set.indices) groups[stratified_ ? set.labels[index] : 0].push_back(index);
  std::vector<int64_t> kept;
  for (auto& [label, members] : groups) {
    Rng rng = this->rng(0, static_cast<uint64_t>(label));
    rng.shuffle(members);
    size_t n_val = static_cast<size_t>(std::llround(val_fraction_ * static_cast<double>(members.size())));
    if (val_part_) kept.insert(kept.end(), members.begin(), members.begin() + n_val);
    else kept.insert(kept.end(), members.begin() + n_val, members.end());
  }
  set.indices = keep_in_order(set.indices, std::move(kept));
}

FLOWRUN_REGISTER_STAGE(Split);

}  // namespace flowrun::stages
