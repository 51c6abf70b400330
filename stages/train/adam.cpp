#include "stages/train/adam.h"

#include "pipeline/registry.h"

namespace flowrun::stages {

namespace {
Schema adam_schema(const char* type, const char* doc) {
  Schema schema(type, doc);
  OptimizerStage::declare_common(schema);
  return schema.param(Float("beta1", "first-moment decay").def(0.9).range(0, 1))
      .param(Float("beta2", "second-moment decay").def(0.999).range(0, 1))
      .param(Float("eps", "denominator term").def(1e-8).at_least(0));
}
}  // namespace

Schema Adam::schema() { return adam_schema("adam", "Adam (L2 weight decay), optional discriminative rates and clipping"); }
Schema AdamW::schema() { return adam_schema("adamw", "AdamW (decoupled weight decay), optional discriminative rates and clipping"); }

Adam::Adam(const StageInit& init, bool decoupled)
    : OptimizerStage(init),
      decoupled_(decoupled),
      beta1_(init.params.get_float("beta1")),
      beta2_(init.params.get_float("beta2")),
      eps_(init.params.get_float("eps")) {}

std::unique_ptr<torch::optim::OptimizerOptions> Adam::options(double lr, double decay) const {
  if (decoupled_)
    return std::make_unique<torch::optim::AdamWOptions>(
        torch::optim::AdamWOptions(lr).betas({beta1_, beta2_}).eps(eps_).weight_decay(decay));
  return std::make_unique<torch::optim::AdamOptions>(
      torch::optim::AdamOptions(lr).betas({beta1_, beta2_}).eps(eps_).weight_decay(decay));
}

std::unique_ptr<torch::optim::Optimizer> Adam::make(std::vector<torch::optim::OptimizerParamGroup> groups) const {
  if (decoupled_) return std::make_unique<torch::optim::AdamW>(std::move(groups), torch::optim::AdamWOptions());
  return std::make_unique<torch::optim::Adam>(std::move(groups), torch::optim::AdamOptions());
}

void Adam::set_momentum(torch::optim::Optimizer& optimizer, double momentum) const {
  for (auto& group : optimizer.param_groups()) {
    if (decoupled_) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
      o.betas({momentum, std::get<1>(o.betas())});
    } else {
      auto& o = static_cast<torch::optim::AdamOptions&>(group.options());
      o.betas({momentum, std::get<1>(o.betas())});
    }
  }
}

FLOWRUN_REGISTER_STAGE(Adam);
FLOWRUN_REGISTER_STAGE(AdamW);

}  // namespace flowrun::stages
