// `evaluate`: the end of a validation flow. Runs the model in eval mode over
// every sample, counted per sample (never averaged per batch): loss, top-1,
// top-5, per-class accuracy and the confusion matrix of each epoch. Reports
// val_loss, val_top1 and val_top5 of the last epoch.
#pragma once

#include <torch/torch.h>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/job.h"
#include "stages/report/metrics_log.h"

namespace flowrun::stages {

class ModelStage;

struct EvaluationResult {
  int64_t samples = 0;
  double loss = 0, top1 = 0, top5 = 0;
  std::vector<double> per_class;        // accuracy per true class (NaN-free: 0 when a class has no samples)
  std::vector<int64_t> confusion;       // classes x classes, [true][predicted], row-major
  int64_t classes = 0;
};

class Evaluate : public SerialStage {
 public:
  static Schema schema();
  explicit Evaluate(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void end_epoch(const EpochInfo& epoch) override;
  void on_stop(bool interrupted) override { metrics_->stopped(interrupted); }
  void process(Item& item, const Emit& emit) override;
  void report(Report& report) const override;
  // The epoch's running sums and the last epoch's result.
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;
  // DIR/PREFIX_confusion.csv: rows = true class, columns = predicted, plus per-class accuracy.
  void write_confusion() const;
  const EvaluationResult& last() const { return last_; }

 private:
  struct Sums {
    torch::Tensor loss, top1, top5, confusion, seen;
  };
  // The epoch's sums so far over every rank of a job (a collective).
  Sums global_sums() const;

  const StageDirectory& stages_;
  std::string name_;
  std::string model_name_;
  ModelStage* model_ = nullptr;  // found at begin_epoch
  std::string prefix_;
  std::string run_dir_;
  std::vector<std::string> class_names_;
  torch::Tensor loss_sum_, top1_, top5_, confusion_;
  int64_t seen_ = 0;
  EvaluationResult last_;
  ComputeThreads compute_;
  Job* job_;  // the job of several processes this rank is in; null alone
  std::shared_ptr<MetricsLog> metrics_;
};

}  // namespace flowrun::stages
