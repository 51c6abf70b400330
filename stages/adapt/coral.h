// `coral`: Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for
// Deep Domain Adaptation", ECCV 2016 workshops). The loss aligns the second-
// order statistics of the source's and the target's features:
//   loss = weight * 1/(4 d^2) * ||C_S - C_T||_F^2,
//   C = (X^T X - (1^T X)^T (1^T X) / n) / (n - 1)   (X: [n, d] features),
// computed in float32 whatever the autocast. Reports coral_loss (the
// epoch's mean, weight included). A batch with fewer than 2 samples of a
// domain (an epoch's last) has no covariance: its step adds no CORAL loss,
// with a warning.
#pragma once

#include "stages/adapt/adaptation.h"

namespace flowrun::stages {

// The paper's formula without the weight: source [Ns, D], target [Nt, D],
// Ns, Nt >= 2. A scalar, differentiable.
torch::Tensor coral_loss(const torch::Tensor& source, const torch::Tensor& target);

class Coral : public AdaptationStage {
 public:
  static Schema schema();
  explicit Coral(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  torch::Tensor loss(const torch::Tensor& source, const torch::Tensor& target, double progress) override;
  std::map<std::string, double> epoch_figures() const override;
  // The epoch's sum so far (a run resumed mid-epoch reports the whole epoch's).
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  std::string name_;
  double weight_;
  torch::Tensor loss_sum_;  // this epoch's, on the device
  int64_t steps_ = 0;
  int64_t warned_small_ = 0;  // batches too small for a covariance
};

}  // namespace flowrun::stages
