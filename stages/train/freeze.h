// `freeze`: which parts of a ResNet train. mode=none (all), backbone (only
// the head), until (the stem and layers up to `until`); `unfreeze_every=N`
// then unfreezes one more block from the top every N epochs of the phase
// (gradual unfreezing). Frozen parameters get no gradient and no update;
// BatchNorm layers in frozen parts stay in eval mode (their running
// statistics unchanged) unless train_bn=true; bn_eval=true puts every
// BatchNorm layer in eval mode.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "pipeline/stage.h"

namespace flowrun::stages {

class Freeze : public ComponentStage {
 public:
  static Schema schema();
  explicit Freeze(const StageInit& init);
  // Sets requires_grad for epoch `epoch_in_phase`; returns the frozen blocks.
  std::vector<std::string> apply(torch::nn::Module& model, int epoch_in_phase) const;
  // After model.train(): frozen blocks' BatchNorm layers back to eval mode.
  void set_modes(torch::nn::Module& model, int epoch_in_phase) const;

 private:
  std::vector<std::string> frozen_blocks(int epoch_in_phase) const;
  int frozen_count_;  // blocks frozen from the bottom: stem, layer1..4, fc
  int64_t unfreeze_every_;
  bool train_bn_;
  bool bn_eval_;  // every BatchNorm layer in eval mode
};

// The blocks of a ResNet from the bottom: stem (conv1, bn1), layer1..4, fc.
const std::vector<std::string>& resnet_blocks();

}  // namespace flowrun::stages
