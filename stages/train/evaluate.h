// `evaluate`: the end of a validation flow. Runs the model in eval mode over
// every sample, counted per sample (never averaged per batch): loss, top-1,
// top-5, per-class accuracy and the confusion matrix of each epoch. Reports
// val_loss, val_top1 and val_top5 of the last epoch. A multi-task model's
// extra heads are scored the same way, each on the samples labelled for its
// task: val_TASK_loss, val_TASK_top1, val_TASK_top5, val_TASK_confusion.csv
// (a head whose task the flow's data does not label is left out, said once).
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
  // DIR/PREFIX_confusion.csv (DIR/PREFIX_TASK_confusion.csv per extra head):
  // rows = true class, columns = predicted, plus per-class accuracy.
  void write_confusion() const;
  const EvaluationResult& last() const { return heads_.front().last; }

 private:
  struct Sums {
    torch::Tensor loss, top1, top5, confusion, seen;
  };
  // One head's: the classes' (the first), or an extra task's.
  struct Head {
    std::string prefix;  // PREFIX, or PREFIX_TASK
    std::string task;    // "" for the classes
    int64_t classes = 0;
    torch::Tensor loss_sum, top1, top5, confusion;
    int64_t seen = 0;
    bool scored = false;  // this epoch's data labels its task
    EvaluationResult last;
    std::vector<std::string> class_names;
  };
  // Head h's epoch sums so far over every rank of a job (a collective).
  Sums global_sums(const Head& head) const;
  // Adds a batch's logits [N, classes] and labels [N] (-1 = none) to the head's sums.
  void add(Head& head, torch::Tensor logits, torch::Tensor labels, const std::vector<uint8_t>& padding,
           const torch::Tensor& host_labels);
  void write_confusion(const Head& head) const;

  const StageDirectory& stages_;
  std::string name_;
  std::string model_name_;
  ModelStage* model_ = nullptr;  // found at begin_epoch
  std::string prefix_;
  std::string run_dir_;
  std::vector<Head> heads_{1};
  bool warned_unlabelled_ = false;
  int64_t evaluated_ = 0;        // samples this epoch, labelled or not
  bool warned_no_labels_ = false;
  ComputeThreads compute_;
  Job* job_;  // the job of several processes this rank is in; null alone
  std::shared_ptr<MetricsLog> metrics_;
};

}  // namespace flowrun::stages
