// `class_groups`: a second labelling of the samples from their classes, for a
// multi-task model (Fashion-MNIST's ten classes as tops / shoes / bags). A
// file maps each class to a group: one "CLASS<TAB>GROUP" per line (blank
// lines and lines starting with # skipped); the groups are numbered in the
// order they first appear. By default the groups become the labels of the
// extra task `task` (the model's head of that name learns them, the classes
// stay); relabel=true makes the groups the classes themselves (a
// single-task model of the groups). A class the file does not map takes
// `default` ("-": no label for the task; the head skips the sample), else is
// an error naming the file.
#pragma once

#include <map>

#include "stages/data/sampler.h"

namespace flowrun::stages {

class ClassGroups : public SamplerOp {
 public:
  static Schema schema();
  explicit ClassGroups(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool reads_classes() const override { return true; }

 private:
  std::string name_, file_, task_, default_;
  bool relabel_;
  std::map<std::string, std::string> group_of_;  // class -> group
  std::vector<std::string> groups_;              // in the file's order
};

}  // namespace flowrun::stages
