// `keep_labels`: a semi-supervised split of the samples. The labels of k
// samples of every class are kept, chosen once from the seed; the other
// samples stay in the epoch without that label (-1), for what learns from
// them without it: a multi-task model's other heads (group labels on every
// image, class labels on a few), a train stage with unlabelled=skip. As
// the "labelled subset" of semi-supervised benchmarks (TorchSSL's and USB's
// num_labels, drawn per class). `task=` thins an extra task's labels instead
// of the classes'. Put it after the ops that choose samples by class
// (per_class, classes, class_groups): they read the labels it removes.
#pragma once

#include <atomic>

#include "stages/data/sampler.h"

namespace flowrun::stages {

class KeepLabels : public SamplerOp {
 public:
  static Schema schema();
  explicit KeepLabels(const StageInit& init);
  void apply(SampleSet& set, int epoch) const override;
  bool thins_classes() const override { return task_.empty(); }

 private:
  std::string name_, task_;
  int64_t k_;
  mutable std::atomic<bool> warned_{false};  // a class short of k: said once, not every epoch
};

}  // namespace flowrun::stages
