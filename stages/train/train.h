// `train`: the end of the training flow. For each batch: forward, cross-
// entropy on the raw logits (optional label smoothing), backward, clipping,
// an optimizer step, and the schedule stepped per batch. It finds the model,
// optimizer, schedule and freezer stages by name; a new phase (or a gradual
// unfreeze) rebuilds the optimizer over what is trainable. Reports
// train_loss and train_top1 of the last epoch.
//
// In a flow that joins a source and a target (`flow source + target ->`,
// domain adaptation) the batch's first domain (the source) alone gives the
// loss and the figures; target labels are never read. With an adaptation
// stage (`adaptation=coral`, `dann`: stages/adapt/) both domains go through
// the model in one forward pass and the adaptation's loss on their pooled
// features is added; without one, the target's samples are left out.
//
// A multi-task model (the model's tasks=[...]: extra heads on one backbone)
// trains every head in the same step: each head's cross-entropy on the
// samples labelled for its task (a sample without a task's label is skipped
// by that head), combined by fixed task_weights or learned uncertainty
// weighting (task_weighting.h). Reports train_TASK_loss and train_TASK_top1
// per extra task beside train_loss and train_top1 (the classes').
#pragma once

#include <torch/torch.h>

#include <optional>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/gradient_sync.h"
#include "stages/dist/job.h"
#include "stages/train/optimizer.h"
#include "stages/report/metrics_log.h"
#include "stages/train/lr_finder.h"
#include "stages/train/precompute.h"
#include "stages/train/progress.h"
#include "stages/train/task_weighting.h"

namespace flowrun::stages {

class ModelStage;
struct Batch;
class Freeze;
class LossStage;
class ScheduleStage;
class AdaptationStage;

class Train : public SerialStage {
 public:
  static Schema schema();
  explicit Train(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void end_epoch(const EpochInfo& epoch) override;
  void on_stop(bool interrupted) override { metrics_->stopped(interrupted); }
  void process(Item& item, const Emit& emit) override;
  void report(Report& report) const override;
  // Step, phase, optimizer moments and the epoch's running sums.
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  void prepare(int64_t batches_in_epoch);
  // One training step (process() adds where a LibTorch error happened).
  void step(Batch& batch, Item& item, const Emit& emit);
  // Whether a BatchNorm layer of the model normalises with batch statistics now.
  bool batchnorm_trains() const;
  // The learning-rate range test is over: weights back, files written, the run ends.
  void finish_range_test();
  // The epoch's loss sum, correct count and images so far, over every rank of a job.
  std::tuple<double, int64_t, int64_t, int64_t> global_sums() const;  // loss sum, correct, labelled, images
  // A NaN or infinite loss stops the run, naming where it happened.
  void check_finite() const;
  [[noreturn]] void throw_nonfinite(double value, int64_t batch) const;
  // At a phase's start: whether its batches train the head on cached features.
  void plan_phase();
  // The head's logits from the batch's backbone features: cached ones, or
  // computed now (without gradients: the backbone is frozen) and kept.
  // `features`, when given, gets the features the head saw.
  torch::Tensor head_on_cached_features(const Batch& batch, const torch::Tensor& images, torch::Tensor* features = nullptr);
  // A loss stage is told about the phase (LossStage::begin_phase), once per phase.
  void tell_loss_phase();
  // A multi-task model's extra heads: their labels, losses and running sums.
  // Adds each head's mean cross-entropy over the samples labelled for its
  // task to `losses` (undefined: none in this batch), and to the epoch's sums.
  // `batch` and `features` [N, D] are the labelled source's samples; a head
  // with none in the batch adds its zero-gradient term to `absent`.
  void add_task_losses(const Batch& batch, const torch::Tensor& features, std::vector<torch::Tensor>& losses,
                       torch::Tensor& absent);
  // Per extra head, the epoch's loss sum, correct count, labelled samples, over every rank of a job.
  std::vector<std::tuple<double, int64_t, int64_t>> task_global_sums() const;
  // The epoch's per-task figures (train_TASK_loss, _top1; _log_var when learned).
  std::map<std::string, double> task_figures() const;

  const StageDirectory& stages_;
  std::string name_;
  std::string model_name_, optimizer_name_, schedule_name_, freezer_name_, loss_name_, adaptation_name_;
  double label_smoothing_;
  std::string unlabelled_;  // skip: a sample without a class leaves the loss, not the run; error; auto
  EpochInfo epoch_;
  bool prepared_ = false;
  int phase_ = -1;
  std::vector<std::string> frozen_;
  ModelStage* model_ = nullptr;
  OptimizerStage* optimizer_stage_ = nullptr;
  ScheduleStage* schedule_ = nullptr;
  Freeze* freezer_ = nullptr;
  LossStage* loss_ = nullptr;  // none: cross-entropy
  int loss_phase_ = -1;                 // the phase loss_told_ was told of
  const LossStage* loss_told_ = nullptr;
  AdaptationStage* adaptation_ = nullptr;  // none: the source's samples alone train
  // The adaptation's module (a domain classifier), and a module holding it
  // beside the model for a job's gradient averaging; null when none.
  std::shared_ptr<torch::nn::Module> adaptation_module_, synced_;
  std::vector<double> task_weights_;
  bool uncertainty_weighting_;
  std::unique_ptr<TaskWeighting> weighting_;  // a multi-task model's; null for one head
  torch::Tensor saved_log_var_;              // restored, set once the weighting is made
  // Per extra head, this epoch's loss sum, correct count and labelled samples (on the device).
  std::vector<torch::Tensor> task_loss_sum_, task_correct_;
  std::vector<int64_t> task_seen_;
  std::map<std::string, double> task_figures_;  // the last epoch's
  Optimization optimization_;
  std::string saved_optimizer_;  // restored state, loaded once the optimizer is built
  int64_t step_ = 0, total_steps_ = 0;
  torch::Tensor loss_sum_, correct_;
  int64_t seen_ = 0;    // this epoch's samples with a class (the loss's count)
  int64_t images_ = 0;  // this epoch's images stepped on, labelled or not (the throughput's)
  int64_t seen_batches_ = 0;  // this epoch's batches so far
  torch::Tensor first_bad_;   // on the device: the first batch with a non-finite loss, or -1
  double last_loss_ = 0, last_top1_ = 0, last_lr_ = 0;
  std::map<std::string, double> adaptation_figures_;  // the last epoch's (dann_domain_top1...)
  std::map<std::string, double> loss_figures_;        // the loss stage's, the last epoch's (kd_loss...)
  int64_t steps_done_ = 0;
  int64_t dropped_single_ = 0;     // one-sample batches dropped while BatchNorm trains
  int warned_schedule_phase_ = -1;  // the phase whose finished schedule was reported
  // This epoch's first batch arrival and last step's end: images/s of the
  // steps themselves (the pipeline filling up is not counted), best epoch kept.
  int64_t first_batch_ns_ = 0, last_step_ns_ = 0;
  int64_t forward_ns_ = 0, backward_ns_ = 0, optimizer_ns_ = 0;  // summed over the run
  double images_per_s_ = 0, best_images_per_s_ = 0;
  int best_images_per_s_epoch_ = 0;                   // 1-based
  double timed_images_ = 0, timed_s_ = 0;             // over this run's epochs: the mean rate
  Progress progress_;
  ComputeThreads compute_;
  PrecomputePlan precompute_;  // this phase's
  FeatureCache cache_;
  int64_t precompute_batches_ = 0;  // trained from cached features, over the run
  Job* job_;                                // the job of several processes this rank is in; null alone
  std::unique_ptr<GradientSync> sync_;      // in a job: gradients averaged over the ranks, bucket by bucket
  std::unique_ptr<LrFinder> finder_;        // lr_find: the range test instead of training
  std::optional<LrSuggestion> suggestion_;  // what the range test suggested
  std::shared_ptr<MetricsLog> metrics_;
  std::shared_ptr<TensorBoardWriter> tensorboard_;  // the learning rate per step; null: none
};

}  // namespace flowrun::stages
