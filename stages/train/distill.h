// `distill`: knowledge distillation, transfer through a model. A loss stage
// the train stage names (`train = train ... loss=kd`) that teaches the model
// being trained (the student) with a frozen teacher model it names
// (`kd = distill teacher=teacher_model`):
//
// - Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
//   Network": with temperature T and blend alpha,
//     loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y),
//   the KL averaged over the batch as PyTorch's
//   KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)).
// - Park, Kim, Lu & Cho, CVPR 2019, "Relational Knowledge Distillation":
//   on the pooled backbone features (what each head sees) of student and
//   teacher, the distance loss (pairwise distances, each divided by its mean
//   over the batch's pairs, smooth-L1 between student's and teacher's) and
//   the angle loss (the cosine of the angle at e_j of every triplet
//   (e_i, e_j, e_k), smooth-L1), weighted rkd_distance and rkd_angle (the
//   paper: 25 and 50; 0 = off). Averaged as the authors' code
//   (github.com/lenscloth/RKD) does: over the N^2 ordered pairs and N^3
//   triplets, the degenerate ones (i = j; i = j or k = j) counting 0.
//
// The teacher is frozen: eval mode, no gradients, never in an optimizer,
// never written. Its outputs are computed once per sample and kept by
// dataset index (FeatureCache, bounded by cache_limit_mb) when nothing
// before the train stage is random; otherwise for every batch. Figures per
// epoch, weights included (their sum is the train loss): kd_loss (the soft
// part), kd_ce_loss (the hard part), rkd_distance_loss, rkd_angle_loss
// (when on); the summary adds teacher_batches and teacher_cached_batches.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "stages/train/loss.h"
#include "stages/train/precompute.h"

namespace flowrun::stages {

// The soft part without alpha: KLDivLoss(batchmean)(log_softmax(s/T),
// softmax(t/T)) * T^2, in float32. student, teacher: [N, classes].
torch::Tensor kd_soft_loss(const torch::Tensor& student, const torch::Tensor& teacher, double temperature);
// RKD's distance and angle losses without their weights, in float32:
// student [N, Ds], teacher [N, Dt] (the widths may differ), N >= 2.
torch::Tensor rkd_distance_loss(const torch::Tensor& student, const torch::Tensor& teacher);
torch::Tensor rkd_angle_loss(const torch::Tensor& student, const torch::Tensor& teacher);

class Distill : public LossStage {
 public:
  static Schema schema();
  explicit Distill(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  void begin_phase(const LossPhase& phase) override;
  bool wants_features() const override { return rkd_distance_ > 0 || rkd_angle_ > 0; }
  torch::Tensor batch_loss(const LossContext& batch) override;
  std::map<std::string, double> epoch_figures() const override;
  void report(Report& report) const override;
  // The epoch's sums so far and the run's batch counts (the cache is not
  // kept: a resumed run computes the teacher's outputs again).
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  // The teacher's logits (in the student's class order) and, when RKD is
  // on, its features, float32 on the student's device: cached or computed now.
  std::pair<torch::Tensor, torch::Tensor> teacher_outputs(const LossContext& batch);
  // Each student output's teacher output, matched by class name.
  const torch::Tensor& class_order(const ModelStage& student, const torch::Device& device);
  std::string where() const;  // "FILE:LINE:COL: " of this stage's declaration, or ""

  const StageDirectory& stages_;
  std::string name_, teacher_name_;
  double temperature_, alpha_, rkd_distance_, rkd_angle_;
  std::string cache_mode_;
  Location declared_;
  ModelStage* teacher_ = nullptr;  // this phase's
  bool caching_ = false;           // this phase keeps the teacher's outputs
  std::string phase_;
  FeatureCache cache_;
  std::vector<std::string> order_student_, order_teacher_;  // the names class_order_ was made for
  torch::Tensor class_order_;                              // undefined: the same order
  bool order_known_ = false;
  // The epoch's sums, per sample, on the device; samples seen.
  torch::Tensor kd_sum_, ce_sum_, distance_sum_, angle_sum_;
  int64_t samples_ = 0;
  int64_t teacher_batches_ = 0, cached_batches_ = 0;  // over the run
  int64_t small_batches_ = 0;  // too small for RKD's pairs (warned once)
};

}  // namespace flowrun::stages
