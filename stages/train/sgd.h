// `sgd`: stochastic gradient descent with momentum (optionally Nesterov).
// See optimizer.h for the groups, discriminative rates and clipping.
#pragma once

#include "stages/train/optimizer.h"

namespace flowrun::stages {

class Sgd : public OptimizerStage {
 public:
  static Schema schema();
  explicit Sgd(const StageInit& init);
  void set_momentum(torch::optim::Optimizer& optimizer, double momentum) const override;

 protected:
  std::unique_ptr<torch::optim::OptimizerOptions> options(double lr, double decay) const override;
  std::unique_ptr<torch::optim::Optimizer> make(std::vector<torch::optim::OptimizerParamGroup> groups) const override;

 private:
  double momentum_;
  bool nesterov_;
};

}  // namespace flowrun::stages
