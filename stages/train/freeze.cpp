#include "stages/train/freeze.h"

#include <algorithm>

#include "pipeline/registry.h"

namespace flowrun::stages {

const std::vector<std::string>& resnet_blocks() {
  static const std::vector<std::string> blocks = {"stem", "layer1", "layer2", "layer3", "layer4", "fc"};
  return blocks;
}

namespace {
// The block a parameter or module key belongs to.
std::string block_of(const std::string& key) {
  if (key.rfind("conv1", 0) == 0 || key.rfind("bn1", 0) == 0) return "stem";
  return key.substr(0, key.find('.'));
}
}  // namespace

Schema Freeze::schema() {
  return Schema("freeze", "freezes part of a ResNet: none, the backbone, or up to a layer; optional gradual unfreezing")
      .provides("freezer")
      .param(String("mode", "none, backbone (all but the head) or until").def(std::string("backbone"))
                 .one_of({"none", "backbone", "until"}))
      .param(String("until", "with mode=until: the last frozen block").def(std::string("layer3"))
                 .one_of({"stem", "layer1", "layer2", "layer3", "layer4"}))
      .param(Int("unfreeze_every", "unfreeze one more block from the top every N epochs; 0 = never").def(int64_t{0})
                 .at_least(0))
      .param(Bool("train_bn", "let BatchNorm layers in frozen blocks update their statistics").def(false))
      .param(Bool("bn_eval", "every BatchNorm layer in eval mode, frozen or not: batches are normalised with the "
                             "running statistics, which stay as they are (fine-tuning with small batches)").def(false))
      .check([](const Params& p) {
        return p.get_bool("bn_eval") && p.get_bool("train_bn") ? "train_bn and bn_eval contradict each other" : "";
      });
}

Freeze::Freeze(const StageInit& init)
    : unfreeze_every_(init.params.get_int("unfreeze_every")),
      train_bn_(init.params.get_bool("train_bn")),
      bn_eval_(init.params.get_bool("bn_eval")) {
  const std::string mode = init.params.get_string("mode");
  const auto& blocks = resnet_blocks();
  if (mode == "none") frozen_count_ = 0;
  else if (mode == "backbone") frozen_count_ = 5;
  else
    frozen_count_ = static_cast<int>(std::find(blocks.begin(), blocks.end(), init.params.get_string("until")) -
                                     blocks.begin()) + 1;
}

std::vector<std::string> Freeze::frozen_blocks(int epoch_in_phase) const {
  int count = frozen_count_;
  if (unfreeze_every_ > 0) count = std::max(0, count - static_cast<int>(epoch_in_phase / unfreeze_every_));
  return {resnet_blocks().begin(), resnet_blocks().begin() + count};
}

std::vector<std::string> Freeze::apply(torch::nn::Module& model, int epoch_in_phase) const {
  std::vector<std::string> frozen = frozen_blocks(epoch_in_phase);
  for (auto& item : model.named_parameters(true)) {
    bool freeze = std::find(frozen.begin(), frozen.end(), block_of(item.key())) != frozen.end();
    item.value().set_requires_grad(!freeze);
    if (freeze) item.value().mutable_grad() = torch::Tensor();  // no stale gradient for the optimizer
  }
  return frozen;
}

void Freeze::set_modes(torch::nn::Module& model, int epoch_in_phase) const {
  if (train_bn_) return;
  std::vector<std::string> frozen = frozen_blocks(epoch_in_phase);
  for (auto& item : model.named_modules("", false))
    if (item.value()->as<torch::nn::BatchNorm2d>() &&
        (bn_eval_ || std::find(frozen.begin(), frozen.end(), block_of(item.key())) != frozen.end()))
      item.value()->eval();
}

FLOWRUN_REGISTER_STAGE(Freeze);

}  // namespace flowrun::stages
