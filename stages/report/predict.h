// `predict`: the model's predictions for every sample that reaches it: a CSV
// (path, true class when known, predicted class, the top-5 classes with
// their probabilities) streamed to a temporary file and renamed into place
// when the run completes, and a PNG grid of the first images titled
// "true / predicted" (wrong ones in red), as the recipe's last plot.
#pragma once

#include <fstream>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/job.h"
#include "stages/report/image_grid.h"

namespace flowrun::stages {

class Predict : public SerialStage {
 public:
  static Schema schema();
  explicit Predict(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  void on_stop(bool interrupted) override;
  void report(Report& report) const override;

 private:
  // In a job: every rank's rows, merged by rank 0 in the order of a process alone.
  void merge_shares(bool interrupted);

  const StageDirectory& stages_;
  std::string model_name_, csv_path_, grid_path_, temporary_;
  int64_t grid_count_, columns_;
  std::ofstream csv_;
  std::vector<GridTile> tiles_;
  int64_t predicted_ = 0, correct_ = 0, labelled_ = 0;
  ComputeThreads compute_;
  Job* job_;  // the job of several processes this rank is in; null alone
};

}  // namespace flowrun::stages
