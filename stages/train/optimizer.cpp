#include "stages/train/optimizer.h"

#include <stdexcept>

namespace flowrun::stages {

void OptimizerStage::declare_common(Schema& schema) {
  schema.provides("optimizer")
      .param(Float("lr", "peak learning rate of the head").def(1e-3).range(0, 100))
      .param(Float("wd", "weight decay").def(0.0).range(0, 10))
      .param(Bool("no_decay_bn_bias", "no weight decay on BatchNorm weights and biases").def(true))
      .param(Float("backbone_lr_factor", "backbone lr = lr x this (discriminative learning rates)").def(1.0).range(0, 1000))
      .param(Float("clip_value", "clip every gradient element to [-v, v]; 0 = off").def(0.0).at_least(0))
      .param(Float("clip_norm", "clip the gradients' total norm to this; 0 = off").def(0.0).at_least(0));
}

OptimizerStage::OptimizerStage(const StageInit& init)
    : lr_(init.params.get_float("lr")),
      weight_decay_(init.params.get_float("wd")),
      backbone_factor_(init.params.get_float("backbone_lr_factor")),
      clip_value_(init.params.get_float("clip_value")),
      clip_norm_(init.params.get_float("clip_norm")),
      no_decay_bn_bias_(init.params.get_bool("no_decay_bn_bias")) {}

Optimization OptimizerStage::build(NetworkImpl& model, const std::vector<torch::Tensor>& extra) const {
  // Groups: [head decay, head no-decay, backbone decay, backbone no-decay].
  std::vector<torch::Tensor> grouped[4];
  Optimization out;
  for (const auto& item : model.named_parameters(true)) {
    const torch::Tensor& p = item.value();
    if (!p.requires_grad()) continue;  // frozen: no update at all
    bool head = model.is_head(item.key());
    bool no_decay = no_decay_bn_bias_ && p.dim() <= 1;
    grouped[(head ? 0 : 2) + (no_decay ? 1 : 0)].push_back(p);
    out.parameters.push_back(p);
  }
  for (const torch::Tensor& p : extra) {
    if (!p.requires_grad()) continue;
    grouped[no_decay_bn_bias_ && p.dim() <= 1 ? 1 : 0].push_back(p);
    out.parameters.push_back(p);
  }
  if (out.parameters.empty()) throw std::runtime_error("no trainable parameters (everything is frozen)");
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (int g = 0; g < 4; ++g) {
    if (grouped[g].empty()) continue;
    double lr = g < 2 ? lr_ : lr_ * backbone_factor_;
    double decay = (g % 2) ? 0.0 : weight_decay_;
    groups.emplace_back(grouped[g], options(lr, decay));
    out.peak_lr.push_back(lr);
  }
  out.optimizer = make(std::move(groups));
  return out;
}

void OptimizerStage::clip(const Optimization& optimization) const {
  if (clip_value_ > 0) torch::nn::utils::clip_grad_value_(optimization.parameters, clip_value_);
  if (clip_norm_ > 0) torch::nn::utils::clip_grad_norm_(optimization.parameters, clip_norm_);
}

OptimizerStage& find_optimizer(const StageDirectory& stages, const std::string& name) {
  return stages.require<OptimizerStage>(name, "optimizer");
}

}  // namespace flowrun::stages
