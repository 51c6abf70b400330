#include "stages/train/freeze.h"

#include <algorithm>
#include <stdexcept>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Freeze::schema() {
  return Schema("freeze", "freezes part of the model: none, the backbone, or up to a block; optional gradual unfreezing")
      .provides("freezer")
      .param(String("mode", "none, backbone (all but the head) or until").def(std::string("backbone"))
                 .one_of({"none", "backbone", "until"}))
      .param(String("until", "with mode=until: the last frozen block (a ResNet's: stem, layer1 .. layer4)")
                 .def(std::string("layer3")))
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
    : mode_(init.params.get_string("mode")),
      until_(init.params.get_string("until")),
      unfreeze_every_(init.params.get_int("unfreeze_every")),
      train_bn_(init.params.get_bool("train_bn")),
      bn_eval_(init.params.get_bool("bn_eval")) {}

std::vector<std::string> Freeze::frozen_blocks(const NetworkImpl& model, int epoch_in_phase) const {
  const std::vector<std::string> blocks = model.blocks();
  int count = 0;
  if (mode_ == "backbone") {
    count = static_cast<int>(blocks.size()) - 1;  // all but the head
  } else if (mode_ == "until") {
    auto it = std::find(blocks.begin(), blocks.end() - 1, until_);
    if (it == blocks.end() - 1) {
      std::string names;
      for (size_t i = 0; i + 1 < blocks.size(); ++i) names += (i ? ", " : "") + blocks[i];
      throw std::runtime_error("until='" + until_ + "' is not a block of the model's backbone (" + names + ")");
    }
    count = static_cast<int>(it - blocks.begin()) + 1;
  }
  if (unfreeze_every_ > 0) count = std::max(0, count - static_cast<int>(epoch_in_phase / unfreeze_every_));
  return {blocks.begin(), blocks.begin() + count};
}

std::vector<std::string> Freeze::apply(NetworkImpl& model, int epoch_in_phase) const {
  std::vector<std::string> frozen = frozen_blocks(model, epoch_in_phase);
  for (auto& item : model.named_parameters(true)) {
    bool freeze = std::find(frozen.begin(), frozen.end(), model.block(item.key())) != frozen.end();
    item.value().set_requires_grad(!freeze);
    if (freeze) item.value().mutable_grad() = torch::Tensor();  // no stale gradient for the optimizer
  }
  return frozen;
}

void Freeze::set_modes(NetworkImpl& model, int epoch_in_phase) const {
  if (train_bn_) return;
  std::vector<std::string> frozen = frozen_blocks(model, epoch_in_phase);
  for (auto& item : model.named_modules("", false))
    if ((item.value()->as<torch::nn::BatchNorm2d>() || item.value()->as<torch::nn::BatchNorm1d>()) &&
        (bn_eval_ || std::find(frozen.begin(), frozen.end(), model.block(item.key())) != frozen.end()))
      item.value()->eval();
}

FLOWRUN_REGISTER_STAGE(Freeze);

}  // namespace flowrun::stages
