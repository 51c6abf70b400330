#include "stages/data/imagelist.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/data/imagefolder.h"

namespace flowrun::stages {

namespace fs = std::filesystem;

Schema ImageList::schema() {
  return Schema("imagelist", "images listed in a text file (PATH or PATH<TAB>CLASS per line), or all under a folder")
      .param(Path("list", "the list file; \"\" = use root").def(std::string("")))
      .param(Path("root", "a folder whose images (any depth) are listed, unlabelled; \"\" = use list")
                 .def(std::string("")))
      .param(StringList("classes", "the model's class names, in output order").def(std::vector<std::string>{}))
      .param(DatasetSource::sampler_param())
      .check([](const Params& p) {
        bool list = !p.get_string("list").empty(), root = !p.get_string("root").empty();
        return list == root ? "give exactly one of list= and root=" : "";
      });
}

ImageList::ImageList(const StageInit& init)
    : DatasetSource(init, init.params.get_string("list").empty() ? init.params.get_string("root")
                                                                 : init.params.get_string("list")) {
  std::vector<std::string> classes = init.params.get_string_list("classes");
  std::vector<int64_t> labels;
  const std::string list = init.params.get_string("list");
  if (!list.empty()) {
    std::ifstream in(list);
    if (!in) throw std::runtime_error(list + ": cannot read the image list");
    const fs::path base = fs::path(list).parent_path();
    int line_number = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      std::string path = line, label_name;
      if (size_t tab = line.find('\t'); tab != std::string::npos) {
        path = line.substr(0, tab);
        label_name = line.substr(tab + 1);
      }
      int64_t label = -1;
      if (!label_name.empty()) {
        auto it = std::find(classes.begin(), classes.end(), label_name);
        if (it == classes.end())
          throw std::runtime_error(list + ":" + std::to_string(line_number) + ": class '" + label_name +
                                   "' is not one of classes=[...]");
        label = it - classes.begin();
      }
      paths_.push_back(fs::path(path).is_absolute() ? path : (base / path).string());
      labels.push_back(label);
    }
    if (paths_.empty()) throw std::runtime_error(list + ": the image list is empty");
  } else {
    const std::string root = init.params.get_string("root");
    std::error_code ec;
    if (!fs::is_directory(root, ec)) throw std::runtime_error(root + ": not a folder");
    paths_ = list_images_below(root);
    if (paths_.empty())
      throw std::runtime_error(root + ": no images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) below this folder");
    labels.assign(paths_.size(), -1);
  }
  set_dataset(std::move(labels), std::move(classes));
}

FLOWRUN_REGISTER_STAGE(ImageList);

}  // namespace flowrun::stages
