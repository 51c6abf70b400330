// `adam` and `adamw`: Adam with L2 weight decay, and with decoupled weight
// decay (AdamW). See optimizer.h for the groups, discriminative rates and
// clipping.
#pragma once

#include "stages/train/optimizer.h"

namespace flowrun::stages {

class Adam : public OptimizerStage {
 public:
  static Schema schema();
  explicit Adam(const StageInit& init, bool decoupled = false);
  void set_momentum(torch::optim::Optimizer& optimizer, double momentum) const override;

 protected:
  std::unique_ptr<torch::optim::OptimizerOptions> options(double lr, double decay) const override;
  std::unique_ptr<torch::optim::Optimizer> make(std::vector<torch::optim::OptimizerParamGroup> groups) const override;

 private:
  bool decoupled_;
  double beta1_, beta2_, eps_;
};

class AdamW : public Adam {
 public:
  static Schema schema();
  explicit AdamW(const StageInit& init) : Adam(init, true) {}
};

}  // namespace flowrun::stages
