#include "stages/data/keep_labels.h"

#include <map>
#include <set>
#include <spdlog/spdlog.h>
#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema KeepLabels::schema() {
  return Schema("keep_labels", "sampler op: keeps the labels of k samples of every class (chosen once from the seed); "
                               "the rest stay in the epoch unlabelled (semi-supervised: the labelled subset)").provides("sampler")
      .param(Int("k", "samples per class that keep their label").range(1, 1000000000))
      .param(String("task", "the extra task whose labels are thinned (\"\": the classes)").def(std::string("")))
      .param(sampler_seed_param());
}

KeepLabels::KeepLabels(const StageInit& init)
    : SamplerOp(init, "keep_labels"), name_(init.name), task_(init.params.get_string("task")), k_(init.params.get_int("k")) {}

void KeepLabels::apply(SampleSet& set, int) const {
  std::vector<int64_t>* labels = &set.labels;
  const std::vector<std::string>* class_names = &set.class_names;
  if (!task_.empty()) {
    labels = nullptr;
    std::string known;
    for (TaskLabels& task : set.tasks) {
      if (task.name == task_) labels = &task.labels, class_names = &task.class_names;
      known += (known.empty() ? "" : ", ") + task.name;
    }
    if (!labels)
      throw std::runtime_error("keep_labels '" + name_ + "': the samples have no labels for task '" + task_ + "' (" +
                               (known.empty() ? std::string("they have no extra task") : "their tasks: " + known) +
                               "; task=\"\" thins the classes' labels)");
  }
  // The epoch's distinct samples by class (an index may repeat in the order).
  std::map<int64_t, std::vector<int64_t>> by_class;
  std::set<int64_t> seen;
  for (int64_t index : set.indices) {
    const int64_t label = (*labels)[static_cast<size_t>(index)];
    if (label >= 0 && seen.insert(index).second) by_class[label].push_back(index);
  }
  if (by_class.empty() && !set.indices.empty())
    throw std::runtime_error("keep_labels '" + name_ + "': none of the epoch's " + std::to_string(set.indices.size()) +
                             " samples has a " + (task_.empty() ? std::string("class label") : "'" + task_ + "' label") +
                             " to keep (an unlabelled dataset, or the ops before it left none)");
  const bool say = !warned_.exchange(true);  // the first epoch's classes short of k, in one line
  std::string short_of_k;
  size_t shorts = 0;
  for (auto& [label, members] : by_class) {
    const size_t take = std::min<size_t>(members.size(), static_cast<size_t>(k_));
    if (take < static_cast<size_t>(k_) && say && ++shorts <= 10) {
      const std::string name = static_cast<size_t>(label) < class_names->size() ? (*class_names)[label] : std::to_string(label);
      short_of_k += (short_of_k.empty() ? "" : ", ") + ("'" + name + "' " + std::to_string(members.size()));
    }
    Rng rng = this->rng(0, static_cast<uint64_t>(label));
    rng.choose_front(members, take);
    for (size_t i = take; i < members.size(); ++i) (*labels)[static_cast<size_t>(members[i])] = -1;
  }
  if (shorts > 0)
    spdlog::warn("keep_labels '{}': {} {} fewer than k={} labelled samples ({}{}); all of theirs keep their label", name_,
                 shorts, shorts == 1 ? "class has" : "classes have", k_, short_of_k,
                 shorts > 10 ? ", and " + std::to_string(shorts - 10) + " more" : std::string());
}

FLOWRUN_REGISTER_STAGE(KeepLabels);

}  // namespace flowrun::stages
