// `dann`: domain-adversarial training (Ganin & Lempitsky, "Unsupervised
// Domain Adaptation by Backpropagation", ICML 2015; Ganin et al., JMLR 2016).
// A domain classifier (Linear D->hidden, BatchNorm, ReLU, Linear
// hidden->hidden, BatchNorm, ReLU, Linear hidden->1, as the Transfer-Learning-
// Library's DomainDiscriminator) tells source features (1) from target ones
// (0) behind a gradient reversal layer: forward is the identity, backward
// multiplies the gradient by -lambda, so that the features learn to fool it.
// lambda follows the paper's schedule over the phase's progress p in [0, 1]:
//   lambda = max_lambda * (2 / (1 + exp(-gamma p)) - 1).
// loss = weight * (BCE(d_s, 1) + BCE(d_t, 0)) / 2 (each the domain's mean).
// The classifier's parameters join the train stage's optimizer (the head's
// learning rate). Reports dann_loss, dann_domain_top1 (the classifier's
// accuracy on both domains: 0.5 is the goal) and dann_lambda per epoch.
#pragma once

#include "stages/adapt/adaptation.h"

namespace flowrun::stages {

// The gradient reversal layer: x unchanged forward; backward, -lambda * grad.
torch::Tensor reverse_gradient(const torch::Tensor& x, double lambda);

// The paper's schedule: max_lambda * (2 / (1 + exp(-gamma * progress)) - 1).
double dann_lambda(double progress, double gamma, double max_lambda);

class Dann : public AdaptationStage {
 public:
  static Schema schema();
  explicit Dann(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override;
  std::shared_ptr<torch::nn::Module> prepare(int64_t feature_size, const torch::Device& device) override;
  torch::Tensor loss(const torch::Tensor& source, const torch::Tensor& target, double progress) override;
  std::map<std::string, double> epoch_figures() const override;
  // The domain classifier's weights (and BatchNorm statistics).
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  std::string name_;
  uint64_t seed_;
  int64_t hidden_;
  double weight_, gamma_, max_lambda_;
  torch::nn::Sequential classifier_{nullptr};
  int64_t feature_size_ = 0;
  std::string saved_;  // state loaded before the classifier was built
  torch::Tensor loss_sum_, correct_;
  int64_t steps_ = 0, seen_ = 0;
  double lambda_ = 0;
};

}  // namespace flowrun::stages
