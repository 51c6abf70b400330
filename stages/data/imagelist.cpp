#include "stages/data/imagelist.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/data/imagefolder.h"
#include "stages/data/text_lines.h"

namespace flowrun::stages {

namespace fs = std::filesystem;

Schema ImageList::schema() {
  return Schema("imagelist", "images listed in a text file (PATH or PATH<TAB>CLASS per line), or all under a folder")
      .param(Path("list", "the list file; \"\" = use root").def(std::string("")))
      .param(Path("root", "a folder whose images (any depth) are listed, unlabelled; \"\" = use list")
                 .def(std::string("")))
      .param(StringList("classes", "the model's class names, in output order").def(std::vector<std::string>{}))
      .param(StringList("tasks", "extra label columns after CLASS (PATH<TAB>CLASS<TAB>GROUP...), one task each, for "
                                 "a multi-task model's heads; an empty field or - = no label for that task")
                 .def(std::vector<std::string>{}))
      .param(StringList("task_defaults", "per task, the label of a line without its column (- = no label); \"\" or "
                                         "none given = such a line is an error").def(std::vector<std::string>{}))
      .param(DatasetSource::sampler_param())
      .check([](const Params& p) {
        bool list = !p.get_string("list").empty(), root = !p.get_string("root").empty();
        return list == root ? "give exactly one of list= and root=" : "";
      })
      .check([](const Params& p) -> std::string {
        const auto tasks = p.get_string_list("tasks"), defaults = p.get_string_list("task_defaults");
        if (!defaults.empty() && defaults.size() != tasks.size())
          return "task_defaults has " + std::to_string(defaults.size()) + " value(s) for " + std::to_string(tasks.size()) +
                 " tasks";
        for (size_t i = 0; i < tasks.size(); ++i)
          if (tasks[i].empty() || std::find(tasks.begin(), tasks.begin() + i, tasks[i]) != tasks.begin() + i)
            return "tasks=[...] needs distinct, non-empty names";
        if (!tasks.empty() && p.get_string("list").empty()) return "tasks= reads columns of list=, not a root= folder";
        return "";
      });
}

ImageList::ImageList(const StageInit& init)
    : DatasetSource(init, init.params.get_string("list").empty() ? init.params.get_string("root")
                                                                 : init.params.get_string("list")) {
  std::vector<std::string> classes = init.params.get_string_list("classes");
  std::vector<int64_t> labels;
  const std::string list = init.params.get_string("list");
  const std::vector<std::string> task_names = init.params.get_string_list("tasks");
  std::vector<std::string> task_defaults = init.params.get_string_list("task_defaults");
  task_defaults.resize(task_names.size());
  // Each task's label names per line, numbered once the whole list is read.
  std::vector<std::vector<std::string>> task_values(task_names.size());
  std::vector<TaskLabels> tasks;
  if (!list.empty()) {
    const fs::path base = fs::path(list).parent_path();
    for_each_line(list, "the image list", [&](int line_number, const std::string& line) {
      std::vector<std::string> fields;
      for (size_t start = 0;;) {
        const size_t tab = line.find('\t', start);
        fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
        if (tab == std::string::npos) break;
        start = tab + 1;
      }
      const std::string where = list + ":" + std::to_string(line_number) + ": ";
      if (fields.size() > 2 + task_names.size())
        throw std::runtime_error(where + std::to_string(fields.size()) + " tab-separated fields, but the list has " +
                                 std::to_string(2 + task_names.size()) + " columns (PATH, CLASS" +
                                 [&] {
                                   std::string more;
                                   for (const auto& t : task_names) more += ", " + t;
                                   return more;
                                 }() + (task_names.empty() ? "; name extra label columns with tasks=[...])" : ")"));
      const std::string path = fields[0];
      std::string label_name = fields.size() > 1 ? fields[1] : "";
      if (!task_names.empty() && label_name == "-") label_name.clear();  // a multi-task line may lack the class
      for (size_t t = 0; t < task_names.size(); ++t) {
        std::string value;
        if (fields.size() > 2 + t) {
          value = fields[2 + t];
        } else if (task_defaults[t].empty()) {
          throw std::runtime_error(where + "no column for task '" + task_names[t] + "' (PATH<TAB>CLASS<TAB>" +
                                   task_names[t] + "...; an empty field or - = no label; task_defaults=[...] gives a "
                                   "missing column's label)");
        } else {
          value = task_defaults[t];
        }
        task_values[t].push_back(value == "-" ? "" : value);
      }
      int64_t label = -1;
      if (!label_name.empty()) {
        auto it = std::find(classes.begin(), classes.end(), label_name);
        if (it == classes.end())
          throw std::runtime_error(list + ":" + std::to_string(line_number) + ": class '" + label_name +
                                   "' is not one of the stage's classes=[" + [&] {
                                     std::string all;
                                     for (const auto& c : classes) all += (all.empty() ? "" : ", ") + c;
                                     return all;
                                   }() + "] (a labelled list names its classes, in the model's output order)");
        label = it - classes.begin();
      }
      paths_.push_back(fs::path(path).is_absolute() ? path : (base / path).string());
      labels.push_back(label);
    });
    if (paths_.empty()) throw std::runtime_error(list + ": the image list is empty");
    for (size_t t = 0; t < task_names.size(); ++t) {
      // A task's classes: its labels sorted, as ImageFolder sorts its class folders.
      TaskLabels task{task_names[t], {}, {}};
      for (const auto& value : task_values[t])
        if (!value.empty()) task.class_names.push_back(value);
      std::sort(task.class_names.begin(), task.class_names.end());
      task.class_names.erase(std::unique(task.class_names.begin(), task.class_names.end()), task.class_names.end());
      for (const auto& value : task_values[t])
        task.labels.push_back(value.empty() ? -1
                                            : std::lower_bound(task.class_names.begin(), task.class_names.end(), value) -
                                                  task.class_names.begin());
      tasks.push_back(std::move(task));
    }
  } else {
    const std::string root = init.params.get_string("root");
    std::error_code ec;
    if (!fs::is_directory(root, ec)) throw std::runtime_error(root + ": not a folder");
    paths_ = list_images_below(root);
    if (paths_.empty())
      throw std::runtime_error(root + ": no images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) below this folder");
    labels.assign(paths_.size(), -1);
  }
  set_dataset(std::move(labels), std::move(classes), std::move(tasks));
}

FLOWRUN_REGISTER_STAGE(ImageList);

}  // namespace flowrun::stages
