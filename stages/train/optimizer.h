// Optimizers (`sgd`, `adam`, `adamw`): components that build a LibTorch
// optimizer over the model's trainable parameters, in up to four groups:
// head or backbone (the backbone's learning rate is the head's times
// `backbone_lr_factor`, as fastai's slice), with or without weight decay
// (`no_decay_bn_bias` exempts BatchNorm weights and biases). Gradient
// clipping by value or by norm happens before each step.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "pipeline/stage.h"
#include "stages/model/network.h"

namespace flowrun::stages {

struct Optimization {
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::vector<double> peak_lr;  // per parameter group: what a schedule scales
  std::vector<torch::Tensor> parameters;  // every trainable parameter, for clipping
};

class OptimizerStage : public ComponentStage {
 public:
  explicit OptimizerStage(const StageInit& init);
  // Groups the model's trainable parameters and builds the optimizer.
  // `extra`: parameters that train beside the model (a domain classifier),
  // grouped with the head's (its learning rate and weight decay).
  Optimization build(NetworkImpl& model, const std::vector<torch::Tensor>& extra = {}) const;
  // Clips gradients as configured (before the step).
  void clip(const Optimization& optimization) const;
  // Sets momentum (SGD) or beta1 (Adam) for a schedule that cycles it.
  virtual void set_momentum(torch::optim::Optimizer& optimizer, double momentum) const = 0;
  // The parameters every optimizer stage accepts.
  static void declare_common(Schema& schema);

 protected:
  // One group's options for learning rate `lr` and weight decay `decay`.
  virtual std::unique_ptr<torch::optim::OptimizerOptions> options(double lr, double decay) const = 0;
  virtual std::unique_ptr<torch::optim::Optimizer> make(std::vector<torch::optim::OptimizerParamGroup> groups) const = 0;

 private:
  double lr_, weight_decay_, backbone_factor_, clip_value_, clip_norm_;
  bool no_decay_bn_bias_;
};

OptimizerStage& find_optimizer(const StageDirectory& stages, const std::string& name);

}  // namespace flowrun::stages
