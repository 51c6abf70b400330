// `imagelist`: images named one by one, for prediction on files that are not
// in an ImageFolder layout: a text file (`list`, one path per line, relative
// to the list's folder; "PATH<TAB>CLASS" gives a true class; blank lines and
// lines starting with # are skipped; tasks=[group] reads further label
// columns, PATH<TAB>CLASS<TAB>GROUP, for a multi-task model), or every image under a folder
// (`root`, unlabelled). `classes` names the model's outputs in order, so
// predictions read as class names.
#pragma once

#include "stages/data/dataset_source.h"

namespace flowrun::stages {

class ImageList : public DatasetSource {
 public:
  static Schema schema();
  explicit ImageList(const StageInit& init);

 protected:
  void fill(Sample& sample, int64_t index) override { sample.path = paths_[index]; }

 private:
  std::vector<std::string> paths_;
};

}  // namespace flowrun::stages
