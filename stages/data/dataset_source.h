// What the dataset sources share: the epoch's order from the named sampler,
// and one Sample per visited index (index, label, class names). Subclasses
// list their dataset at construction and fill in the rest of a sample.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pipeline/stage.h"
#include "stages/data/sample.h"
#include "stages/data/sampler.h"

namespace flowrun::stages {

class DatasetSource : public SourceStage {
 public:
  DatasetSource(const StageInit& init, std::string dataset_name);
  void begin_epoch(const EpochInfo& epoch) override;
  bool next(Item& item) override;
  uint64_t skip(uint64_t count) override;
  void report(Report& report) const override;

  // The `sampler` parameter every dataset source has.
  static ParamSpec sampler_param();

 protected:
  // Called once from the subclass constructor.
  void set_dataset(std::vector<int64_t> labels, std::vector<std::string> class_names,
                   std::vector<TaskLabels> tasks = {});
  // Adds what the subclass knows of dataset index `index` (a path, pixels).
  virtual void fill(Sample& sample, int64_t index) = 0;

 private:
  const StageDirectory& stages_;
  std::string sampler_;
  std::string dataset_name_;
  std::vector<int64_t> labels_;
  std::vector<std::string> class_names_;
  std::vector<TaskLabels> tasks_;
  SampleSet epoch_;
  std::shared_ptr<const DatasetInfo> info_;
  JobInfo job_;
  size_t position_ = 0;
  int64_t visited_ = 0;
};

}  // namespace flowrun::stages
