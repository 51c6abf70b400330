#include "stages/data/classes.h"

#include <algorithm>
#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Classes::schema() {
  return Schema("classes", "sampler op: keeps some classes, relabelled 0..k-1 in the order given")
      .provides("sampler")
      .graph_check(refuse_after_keep_labels())
      .param(StringList("names", "class names to keep").def(std::vector<std::string>{}))
      .param(IntList("ids", "class ids to keep (instead of names)").def(std::vector<int64_t>{}).at_least(0))
      .param(sampler_seed_param())
      .check([](const Params& p) {
        return p.get_string_list("names").empty() == p.get_int_list("ids").empty()
                   ? "give exactly one of names=[...] or ids=[...]" : "";
      });
}

Classes::Classes(const StageInit& init)
    : SamplerOp(init, "classes"), names_(init.params.get_string_list("names")), ids_(init.params.get_int_list("ids")) {
  if (names_.empty() == ids_.empty()) throw std::runtime_error("give exactly one of names=[...] or ids=[...]");
}

void Classes::apply(SampleSet& set, int) const {
  std::vector<int64_t> old_ids = ids_;
  if (!names_.empty()) {
    for (const auto& name : names_) {
      auto it = std::find(set.class_names.begin(), set.class_names.end(), name);
      if (it == set.class_names.end())
        throw std::runtime_error("no class named '" + name + "' (classes: " + [&] {
          std::string all;
          for (const auto& n : set.class_names) all += (all.empty() ? "" : ", ") + n;
          return all;
        }() + ")");
      old_ids.push_back(it - set.class_names.begin());
    }
  }
  std::vector<int64_t> relabel(set.class_names.size(), -1);
  std::vector<std::string> names;
  for (int64_t id : old_ids) {
    if (id >= static_cast<int64_t>(set.class_names.size()))
      throw std::runtime_error("class id " + std::to_string(id) + " is out of range (the source has " +
                               std::to_string(set.class_names.size()) + " classes)");
    if (relabel[id] >= 0) throw std::runtime_error("class '" + set.class_names[id] + "' is listed twice");
    relabel[id] = static_cast<int64_t>(names.size());
    names.push_back(set.class_names[id]);
  }
  for (auto& label : set.labels) label = label >= 0 ? relabel[label] : -1;
  std::vector<int64_t> kept;
  for (int64_t index : set.indices)
    if (set.labels[index] >= 0) kept.push_back(index);
  set.indices = std::move(kept);
  set.class_names = std::move(names);
}

FLOWRUN_REGISTER_STAGE(Classes);

}  // namespace flowrun::stages
