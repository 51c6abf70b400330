#include "stages/data/class_groups.h"

#include <algorithm>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/data/text_lines.h"

namespace flowrun::stages {

Schema ClassGroups::schema() {
  return Schema("class_groups", "sampler op: labels each sample with its class's group from a CLASS<TAB>GROUP file, "
                                "as an extra task for a multi-task model's head (or as the classes: relabel=true)")
      .provides("sampler")
      .graph_check(refuse_after_keep_labels())
      .param(Path("file", "the mapping, one CLASS<TAB>GROUP per line"))
      .param(String("task", "the extra task the groups label (the model's tasks=[...] names its head)")
                 .def(std::string("group")))
      .param(String("default", "the group of a class the file does not map; \"-\" = no label for the task (its head "
                               "skips the sample); \"\" = such a class is an error").def(std::string("")))
      .param(Bool("relabel", "the groups become the classes (no extra task): a single-task model of the groups")
                 .def(false))
      .param(sampler_seed_param())
      .check([](const Params& p) {
        return !p.get_bool("relabel") && p.get_string("task").empty() ? "task= names the extra task (or relabel=true)"
                                                                      : "";
      });
}

ClassGroups::ClassGroups(const StageInit& init)
    : SamplerOp(init, "class_groups"),
      name_(init.name),
      file_(init.params.get_string("file")),
      task_(init.params.get_string("task")),
      default_(init.params.get_string("default")),
      relabel_(init.params.get_bool("relabel")) {
  for_each_line(file_, "the class groups", [&](int line_number, const std::string& line) {
    const size_t tab = line.find('\t');
    const std::string where = file_ + ":" + std::to_string(line_number) + ": ";
    if (tab == std::string::npos || tab == 0 || tab + 1 == line.size() || line.find('\t', tab + 1) != std::string::npos)
      throw std::runtime_error(where + "not CLASS<TAB>GROUP: '" + line + "'");
    const std::string cls = line.substr(0, tab), group = line.substr(tab + 1);
    if (group == "-") throw std::runtime_error(where + "'-' is no group (leave class '" + cls + "' out, with default=-)");
    if (!group_of_.emplace(cls, group).second)
      throw std::runtime_error(where + "class '" + cls + "' is mapped twice");
    if (std::find(groups_.begin(), groups_.end(), group) == groups_.end()) groups_.push_back(group);
  });
  if (groups_.empty()) throw std::runtime_error(file_ + ": no CLASS<TAB>GROUP line");
  if (!default_.empty() && default_ != "-" &&
      std::find(groups_.begin(), groups_.end(), default_) == groups_.end())
    groups_.push_back(default_);
}

void ClassGroups::apply(SampleSet& set, int) const {
  // The group of each of the set's classes (-1: none).
  std::vector<int64_t> group_of_class(set.class_names.size(), -1);
  for (size_t c = 0; c < set.class_names.size(); ++c) {
    auto it = group_of_.find(set.class_names[c]);
    const std::string group = it != group_of_.end() ? it->second : default_;
    if (group.empty())
      throw std::runtime_error("class_groups '" + name_ + "': " + file_ + " maps no group to class '" +
                               set.class_names[c] + "' (add a line '" + set.class_names[c] +
                               "<TAB>GROUP', or set default= to a group, or to - for no label)");
    if (group != "-") group_of_class[c] = std::find(groups_.begin(), groups_.end(), group) - groups_.begin();
  }
  std::vector<int64_t> labels(set.labels.size(), -1);
  for (size_t i = 0; i < labels.size(); ++i)
    if (set.labels[i] >= 0) labels[i] = group_of_class.at(static_cast<size_t>(set.labels[i]));
  if (relabel_) {
    set.labels = std::move(labels);
    set.class_names = groups_;
    // A sample without a group is no longer in use (as the classes op drops a class).
    std::vector<int64_t> kept;
    for (int64_t index : set.indices)
      if (set.labels[index] >= 0) kept.push_back(index);
    set.indices = std::move(kept);
    return;
  }
  for (const TaskLabels& task : set.tasks)
    if (task.name == task_)
      throw std::runtime_error("class_groups '" + name_ + "': the samples already have labels for task '" + task_ + "'");
  set.tasks.push_back({task_, std::move(labels), groups_});
}

FLOWRUN_REGISTER_STAGE(ClassGroups);

}  // namespace flowrun::stages
