#include "stages/train/sgd.h"

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Sgd::schema() {
  Schema schema("sgd", "SGD with momentum (optionally Nesterov), optional discriminative rates and clipping");
  OptimizerStage::declare_common(schema);
  return schema.param(Float("momentum", "momentum").def(0.9).range(0, 1))
      .param(Bool("nesterov", "Nesterov momentum").def(false))
      .check([](const Params& p) {
        return p.get_bool("nesterov") && p.get_float("momentum") <= 0 ? "nesterov needs momentum > 0" : "";
      });
}

Sgd::Sgd(const StageInit& init)
    : OptimizerStage(init), momentum_(init.params.get_float("momentum")), nesterov_(init.params.get_bool("nesterov")) {}

std::unique_ptr<torch::optim::OptimizerOptions> Sgd::options(double lr, double decay) const {
  return std::make_unique<torch::optim::SGDOptions>(
      torch::optim::SGDOptions(lr).momentum(momentum_).nesterov(nesterov_).weight_decay(decay));
}

std::unique_ptr<torch::optim::Optimizer> Sgd::make(std::vector<torch::optim::OptimizerParamGroup> groups) const {
  return std::make_unique<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(0.01));
}

void Sgd::set_momentum(torch::optim::Optimizer& optimizer, double momentum) const {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::SGDOptions&>(group.options()).momentum(momentum);
}

FLOWRUN_REGISTER_STAGE(Sgd);

}  // namespace flowrun::stages
